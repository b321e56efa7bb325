"""SIGKILL at random (seeded) moments inside every stage of a run, each restart resuming the last.

A kill is armed in the run itself (``EQUAL_TEST_KILL_AT=<stage>_start@<seconds>``: a timer started when
the stage begins), with a delay drawn at random within that stage's duration in a clean run, so kills
land inside corpus indexing, reference embedding, the corpus embedding, the warm-up, alignment,
clustering, the step that writes the warm-up to the dataset, the rounds, finalize and the report, not
only at the named points before and after commits (``tests/e2e/test_resume.py``). Where a kill landed is read
from the run's work log (the last stage the killed process entered); a kill that lands after its stage
(the stage ran faster than in the clean run) is undone (the run folder is put back) and tried again
sooner. After every kill, every file of the run folder but the journals reads back whole (written
atomically); every resume must end byte-identical to a clean run, and every kill must have thrown away at
most one unit of work of its stage.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REF_MATH, write_slice
from equal.run import work_log
from test_resume import _same_outputs, check_no_work_redone, clean_work

pytestmark = [pytest.mark.slow, pytest.mark.needs_data]

FLAGS = ["--set", "embed.max_seq_length=128", "--set", "embed.chunk_docs=128", "--set", "embed.cache=false",
         "--set", "extract.batch_docs=16", "--set", "score.prior_sample=100", "--set", "align.warmup_fraction=0.5", "--set", "align.warmup_sampling=random",
         "--budget", "0.3", "--seed", "5", "-q"]
# every stage a run goes through, in order; each is the target of one kill (two for the corpus embedding)
TARGETS = ["index", "reference", "embed", "embed", "warmup", "align", "cluster", "warmup_written", "rounds",
           "finalize", "report"]


def _run(corpus, out, kill_at=None):
    env = {**os.environ}
    if kill_at:
        env["EQUAL_TEST_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-m", "equal.cli", "run", "--corpus", str(corpus), "--reference",
                           str(REF_MATH), "--out", str(out), *FLAGS], capture_output=True, text=True, env=env,
                          timeout=600, start_new_session=True)


def stage_durations(run_dir: Path) -> dict[str, float]:
    """Seconds each stage took in the (single-process) run at ``run_dir``, from its work log."""
    events = [json.loads(line) for line in open(Path(run_dir) / "state" / "work.jsonl")]
    marks = [(e["stage"], e["t"]) for e in events if e["event"] == "stage"]
    end = next(e["t"] for e in events if e["event"] == "exit")
    times = [t for _, t in marks[1:]] + [end]
    return {stage: t1 - t0 for (stage, t0), t1 in zip(marks, times)}


def check_files_whole(run_dir: Path) -> int:
    """Every file of a killed run folder that is not a journal reads back whole: JSON and YAML parse, arrays
    load, images open (files are written to a temporary file and renamed; a temporary file left by the
    kill starts with a dot). Returns how many files were checked."""
    import numpy as np
    import yaml
    from PIL import Image

    n = 0
    for p in sorted(Path(run_dir).rglob("*")):
        if not p.is_file() or p.name.startswith("."):
            continue
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".yaml":
            yaml.safe_load(p.read_text())
        elif p.suffix in (".npy", ".npz"):
            np.load(p, mmap_mode="r") if p.suffix == ".npy" else dict(np.load(p))
        elif p.suffix == ".png":
            with Image.open(p) as im:
                im.verify()
        else:
            continue
        n += 1
    return n


@pytest.fixture(scope="module")
def corpus300(tmp_path_factory):
    return write_slice(tmp_path_factory.mktemp("kill-stages") / "corpus.jsonl", 300)


def test_sigkill_at_random_moments_in_every_stage_then_resume(corpus300, tmp_path):
    clean_dir = tmp_path / "clean"
    r = _run(corpus300, clean_dir)
    assert r.returncode == 0, r.stderr[-3000:]
    clean = clean_work(clean_dir)
    durations = stage_durations(clean_dir)
    assert set(TARGETS) <= set(durations), durations

    rng = random.Random(20240611)
    out, backup = tmp_path / "killed", tmp_path / "backup"
    kills, overshot = [], []  # (target, delay, stage the kill landed in)
    for target in TARGETS:
        # the run folder as it is before this kill: a kill that lands after its stage (that stage ran faster
        # than in the clean run) is undone, and tried again sooner
        shutil.rmtree(backup, ignore_errors=True)
        if out.exists():
            shutil.copytree(out, backup)
        for attempt in range(5):
            delay = rng.uniform(0.05, 0.6) * durations[target] / 2 ** attempt
            r = _run(corpus300, out, f"{target}_start@{delay:.4f}")
            assert r.returncode in (0, -signal.SIGKILL), (target, r.returncode, r.stderr[-3000:])
            proc = work_log(out)[-1]
            landed = proc["stages"][-1] if r.returncode else "(finished)"
            if landed == target:
                assert proc["exit"] is None, proc
                assert check_files_whole(out) > 0
                kills.append((target, round(delay, 4), landed))
                break
            overshot.append((target, round(delay, 4), landed))
            shutil.rmtree(out)
            if backup.exists():
                shutil.copytree(backup, out)
        else:
            pytest.fail(f"no kill landed in stage {target} in 5 tries: {overshot}")
    r = _run(corpus300, out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming" in r.stderr
    _same_outputs(clean_dir, out)
    landed = check_no_work_redone(out, clean)
    print("kills (target, delay s, landed in):", kills, "; undone:", overshot)
    assert landed == TARGETS, (landed, kills)
