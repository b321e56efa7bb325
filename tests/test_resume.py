"""Crash safety: SIGKILL at many moments, resume, and compare with an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REF_MATH

pytestmark = pytest.mark.slow

COMMON = ["--set", "embed.max_seq_length=128", "--set", "embed.chunk_docs=64", "--set", "embed.cache=false",
          "--set", "extract.batch_docs=16", "--budget", "0.3", "--seed", "3", "-q"]


def _cmd(corpus, out, *extra):
    return [sys.executable, "-m", "equal.cli", "run", "--corpus", str(corpus), "--reference", str(REF_MATH),
            "--out", str(out), *COMMON, *extra]


def _run(cmd, env_extra=None, timeout=600):
    env = {**os.environ, **(env_extra or {})}
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, start_new_session=True)
    return r, time.perf_counter() - t


@pytest.fixture(scope="module")
def small_corpus(slice_path, tmp_path_factory):
    p = tmp_path_factory.mktemp("resume") / "corpus.jsonl"
    with open(slice_path) as src, open(p, "w") as dst:
        for _, line in zip(range(400), src):
            dst.write(line)
    return p


@pytest.fixture(scope="module")
def clean_run(small_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "run"
    r, wall = _run(_cmd(small_corpus, out))
    assert r.returncode == 0, r.stderr[-3000:]
    noop, _ = _run(_cmd(small_corpus, out))  # a finished run is left alone
    assert noop.returncode == 0 and "already finished" in noop.stderr
    # what every (re)start pays before any work: interpreter, imports, loading the embedder
    start, startup_wall = _run([sys.executable, "-c", "import equal.run; from equal.embed import Embedder; Embedder()"])
    assert start.returncode == 0, start.stderr
    return out, wall, startup_wall


def _same_outputs(a: Path, b: Path):
    for name in ("dataset.jsonl", "rounds.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_sigkill_at_every_stage_then_resume_matches_a_clean_run(small_corpus, clean_run, tmp_path):
    ref_out, clean_wall, startup_wall = clean_run
    out = tmp_path / "run"
    kill_points = ["warmup_appended:2", "warmup_batch:3", "embed_chunk:3", "align:1", "cluster:1",
                   "round_appended:2", "round:3", "round_appended:1"]
    total, runs = 0.0, 0
    for point in kill_points:
        r, wall = _run(_cmd(small_corpus, out), {"EQUAL_TEST_KILL_AT": point})
        total += wall
        runs += 1
        assert r.returncode == -signal.SIGKILL, (point, r.returncode, r.stderr[-2000:])
    # one kill by timing, from outside, to the whole process group, while the corpus is being embedded
    p = subprocess.Popen(_cmd(small_corpus, tmp_path / "timed"), start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    progress = tmp_path / "timed" / "state" / "doc_vectors.npy.progress.json"
    deadline = time.time() + 300
    while time.time() < deadline:
        if progress.exists() and json.loads(progress.read_text() or "{}").get("rows", 0) >= 128:
            break
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    assert p.wait(timeout=30) == -signal.SIGKILL
    # resume both to the end
    r, wall = _run(_cmd(small_corpus, out))
    total += wall
    runs += 1
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming" in r.stderr
    r2, _ = _run(_cmd(small_corpus, tmp_path / "timed"))
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert json.loads(progress.read_text())["rows"] == 400
    _same_outputs(ref_out, out)
    _same_outputs(ref_out, tmp_path / "timed")
    s = json.loads((out / "summary.json").read_text())
    assert s["docs_extracted"] == 120 and s["pairs"] == sum(1 for _ in open(out / "dataset.jsonl"))
    # work was resumed, not redone: all the runs together cost about one clean run plus start-ups
    assert total < clean_wall + runs * (startup_wall + 2) + 15, (total, clean_wall, startup_wall, runs)


def test_sigterm_saves_and_says_how_to_resume(small_corpus, clean_run, tmp_path):
    out = tmp_path / "run"
    p = subprocess.Popen(_cmd(small_corpus, out), start_new_session=True, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    progress = out / "state" / "doc_vectors.npy.progress.json"
    deadline = time.time() + 300
    while time.time() < deadline and not (progress.exists() and json.loads(progress.read_text() or "{}").get("rows", 0) >= 64):
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 128 + signal.SIGTERM
    assert "Resume with the same command" in err and "Traceback" not in err
    rows = json.loads(progress.read_text())["rows"]
    assert 64 <= rows < 400
    r, _ = _run(_cmd(small_corpus, out))
    assert r.returncode == 0, r.stderr[-2000:]
    _same_outputs(clean_run[0], out)


def test_changed_config_is_refused_unless_restart(small_corpus, clean_run, tmp_path):
    ref_out = clean_run[0]
    r, _ = _run(_cmd(small_corpus, ref_out, "--clusters", "7"))
    assert r.returncode == 2
    assert "cluster.k" in r.stderr and "--restart" in r.stderr and "Traceback" not in r.stderr
    before = (ref_out / "rounds.jsonl").read_bytes()
    # an operational field (concurrency) may change on resume
    r, _ = _run(_cmd(small_corpus, ref_out, "--llm-concurrency", "3"))
    assert r.returncode == 0 and "already finished" in r.stderr
    assert (ref_out / "rounds.jsonl").read_bytes() == before
    out = tmp_path / "copy"
    import shutil

    shutil.copytree(ref_out, out)
    r, _ = _run(_cmd(small_corpus, out, "--clusters", "7", "--restart"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "rounds.jsonl").read_bytes() != before
    assert json.loads((out / "summary.json").read_text())["plan"]["k"] == 7


def test_llm_requests_are_not_repeated_after_kills(small_corpus, openai_server, tmp_path):
    out = tmp_path / "run"
    extra = ["--extractor", "openai", "--llm-base-url", openai_server.url, "--llm-model", "m",
             "--cache-dir", str(tmp_path / "cache"), "--llm-concurrency", "4"]
    for point in ["warmup_appended:2", "round_appended:2", "round:5"]:
        r, _ = _run(_cmd(small_corpus, out, *extra), {"EQUAL_TEST_KILL_AT": point})
        assert r.returncode == -signal.SIGKILL, (point, r.stderr[-2000:])
    r, _ = _run(_cmd(small_corpus, out, *extra))
    assert r.returncode == 0, r.stderr[-2000:]
    per_doc = openai_server.docs_seen("extract")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["docs_extracted"] == 120
    assert len(per_doc) == 120  # every extracted document was asked for
    repeats = sum(n - 1 for n in per_doc.values())
    # kills happen between batches here, so nothing was in flight: no document is asked twice
    assert repeats == 0, repeats
