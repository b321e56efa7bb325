"""Crash safety: SIGKILL at many moments, resume, and compare with an uninterrupted run.

"No work redone" is checked with the run's own work counters (``state/work.jsonl``, read by
:func:`equal.run.work_log`), not with wall-clock time: for every killed process, the work it did whose
results were not committed when the next process started must fit in one unit of the stage it was killed
in (one embedding chunk, one warm-up batch, one round, ...), and the process that finishes does exactly
what was left. The helpers here are shared with ``tests/e2e/test_kill_*.py``.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REF_MATH, read_corpus
from equal.run import WORK_KINDS, work_log

pytestmark = pytest.mark.slow

CHUNK = 128  # two encode blocks of 64 (embed.batch_size) per checkpointed chunk
COMMON = ["--set", "embed.max_seq_length=128", "--set", f"embed.chunk_docs={CHUNK}", "--set", "embed.cache=false",
          "--set", "extract.batch_docs=16", "--set", "score.prior_sample=100", "--set", "align.warmup_fraction=0.5", "--set", "align.warmup_sampling=random",
          "--budget", "0.3", "--seed", "3", "-q"]


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
    assert len(work_log(out)) == 1  # ... and does not even count itself as a process of the run
    return out, wall


def _same_outputs(a: Path, b: Path):
    for name in ("dataset.jsonl", "rounds.jsonl", "extracted.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


# ---------------------------------------------------------------- work counters
def clean_work(run_dir: Path) -> dict:
    """The work of a run done by one uninterrupted process."""
    procs = work_log(run_dir)
    assert len(procs) == 1 and procs[0]["exit"] == "finished", procs
    return {k: procs[0][k] for k in WORK_KINDS}


def redone(run_dir: Path, clean: dict) -> list[tuple[dict, dict]]:
    """``(process, waste)`` for every process of a run: the work it did that was not committed when the
    next process started (what that one had to do again); for the last process, the work it did beyond
    what the clean run needed and its start had not committed (0 unless it redid committed work)."""
    procs = work_log(run_dir)
    out = []
    for a, b in zip(procs, procs[1:]):
        out.append((a, {k: a[k] - (b["committed"][k] - a["committed"][k]) for k in WORK_KINDS}))
    last = procs[-1]
    out.append((last, {k: last[k] - (clean[k] - last["committed"][k]) for k in WORK_KINDS}))
    return out


def unit_of(stage: str, summary: dict, clean: dict) -> dict:
    """The most work of each kind a kill in ``stage`` may throw away: one unit of that stage."""
    plan, cfg = summary["plan"], summary["config"]
    chunk = -(-cfg["embed"]["chunk_docs"] // cfg["embed"]["batch_size"]) * cfg["embed"]["batch_size"]
    unit = dict.fromkeys(WORK_KINDS, 0)
    if stage == "reference":
        unit["reference"] = chunk  # the reference samples are embedded in checkpointed chunks too
    elif stage == "embed":
        unit["embedded"] = chunk
    elif stage == "warmup":
        unit["extracted"] = cfg["extract"]["batch_docs"]
    elif stage == "warmup_written":
        unit["scored"] = plan["k"]  # one OT reward per arm holding warm-up documents
    elif stage == "rounds":
        unit["extracted"] = plan["clusters_per_round"] * plan["docs_per_pull"]
        unit["scored"] = plan["clusters_per_round"]
    elif stage in ("finalize", "report"):
        unit["scored"] = 1  # the final OT distance
    return unit


def check_no_work_redone(run_dir: Path, clean: dict) -> list[str]:
    """Assert that every kill cost at most one unit of the stage it landed in, and that the finishing
    process did exactly what was left; returns the stage each killed process was in."""
    summary = json.loads((Path(run_dir) / "summary.json").read_text())
    rows = redone(run_dir, clean)
    landed = []
    for proc, waste in rows[:-1]:
        stage = proc["stages"][-1] if proc["stages"] else "start-up"
        landed.append(stage)
        unit = unit_of(stage, summary, clean)
        for kind in WORK_KINDS:
            assert waste[kind] <= unit[kind], (f"process {proc['process']} (stopped in stage {stage}, exit "
                                               f"{proc['exit']}) threw away {waste[kind]} {kind}, more than one "
                                               f"unit ({unit[kind]})", waste, proc)
    last, waste = rows[-1]
    assert last["exit"] == "finished", last
    assert all(v == 0 for v in waste.values()), ("the finishing process redid committed work", waste, last)
    return landed


def test_sigkill_at_every_stage_then_resume_matches_a_clean_run(small_corpus, clean_run, tmp_path):
    ref_out = clean_run[0]
    clean = clean_work(ref_out)
    assert clean["embedded"] == 400 and clean["extracted"] == 120 and clean["scored"] > 0, clean
    out = tmp_path / "run"
    # named points, in stage order: mid-chunk and just after a chunk, mid-batch and after a batch, after
    # align and cluster (before their mark), the warm-up written to the dataset, rounds, the summary
    kill_points = ["index:1", "reference:1", "embed_block:3", "embed_chunk:2", "warmup_appended:2",
                   "warmup_batch:3", "align:1", "cluster:1", "warmup_written_appended:1", "round_appended:2",
                   "round:3", "round_appended:1", "summary:1", "finalize:1"]
    for point in kill_points:
        r, _ = _run(_cmd(small_corpus, out), {"EQUAL_TEST_KILL_AT": point})
        assert r.returncode == -signal.SIGKILL, (point, r.returncode, r.stderr[-2000:])
    # one kill by timing, from outside, to the whole process group, while the corpus is being embedded
    p = subprocess.Popen(_cmd(small_corpus, tmp_path / "timed"), start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    progress = tmp_path / "timed" / "state" / "doc_vectors.npy.progress.json"
    deadline = time.time() + 300
    while time.time() < deadline:
        if progress.exists() and json.loads(progress.read_text() or "{}").get("rows", 0) >= CHUNK:
            break
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    assert p.wait(timeout=30) == -signal.SIGKILL
    # resume both to the end
    r, _ = _run(_cmd(small_corpus, out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming" in r.stderr
    r2, _ = _run(_cmd(small_corpus, tmp_path / "timed"))
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert json.loads(progress.read_text())["rows"] == 400
    _same_outputs(ref_out, out)
    _same_outputs(ref_out, tmp_path / "timed")
    s = json.loads((out / "summary.json").read_text())
    assert s["docs_extracted"] == 120 and s["pairs"] == sum(1 for _ in open(out / "dataset.jsonl"))
    assert [p["process"] for p in s["work"]] == list(range(len(kill_points) + 1))  # the work log, per process
    # work was resumed, not redone: each kill threw away at most one unit of its stage
    landed = check_no_work_redone(out, clean)
    assert len(landed) == len(kill_points)
    assert {"index", "reference", "embed", "warmup", "align", "cluster", "warmup_written", "rounds",
            "finalize"} <= set(landed), landed
    check_no_work_redone(tmp_path / "timed", clean)
    # the embedding was checkpointed at chunk boundaries (multiples of CHUNK), across processes
    b = json.loads(progress.read_text())
    assert b["block"] == 64 and b["segments"][0][0] == 0 and b["segments"][-1][1] == 400
    assert all(seg[2] == CHUNK for seg in b["segments"]), b


def test_sigterm_saves_and_says_how_to_resume(small_corpus, clean_run, tmp_path):
    out = tmp_path / "run"
    p = subprocess.Popen(_cmd(small_corpus, out), start_new_session=True, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    progress = out / "state" / "doc_vectors.npy.progress.json"
    deadline = time.time() + 300
    while time.time() < deadline and not (progress.exists() and json.loads(progress.read_text() or "{}").get("rows", 0) >= CHUNK):
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 128 + signal.SIGTERM
    assert "Resume with the same command" in err and "Traceback" not in err
    rows = json.loads(progress.read_text())["rows"]
    assert CHUNK <= rows < 400
    r, _ = _run(_cmd(small_corpus, out))
    assert r.returncode == 0, r.stderr[-2000:]
    _same_outputs(clean_run[0], out)
    # SIGTERM finishes the chunk in progress and saves it: nothing is thrown away
    procs = work_log(out)
    assert [p["exit"] for p in procs] == ["interrupted", "finished"], procs
    waste = redone(out, clean_work(clean_run[0]))
    assert all(v == 0 for _, w in waste for v in w.values()), waste


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


# ---------------------------------------------------------------- embedding chunks never change a vector
def _varied_texts(n):
    """Real documents cut to varied lengths, so that which texts share a padded batch matters."""
    rng = np.random.default_rng(0)
    return [r["text"][: int(rng.integers(20, 700))] for r in read_corpus(n)]


def test_embedding_chunk_size_and_interruptions_never_change_a_vector(embedder, tmp_path):
    from equal.embed import chunk_boundaries, embed_to_memmap

    texts = _varied_texts(200)
    dim, block = embedder.dim, embedder.batch_size
    assert block == 64

    def embed(path, chunk, encode=embedder.encode):
        return np.asarray(embed_to_memmap(path, len(texts), dim, lambda a, b: texts[a:b], encode, chunk=chunk,
                                          progress=False, key={"test": 1}, block=block))

    a = embed(tmp_path / "a.npy", 64)
    b = embed(tmp_path / "b.npy", 192)
    assert np.array_equal(a, b)  # bit for bit
    assert chunk_boundaries(tmp_path / "a.npy") == [64, 128, 192, 200]
    assert chunk_boundaries(tmp_path / "b.npy") == [192, 200]
    # a chunk that is not a whole number of blocks is rounded up to one
    embed(tmp_path / "c.npy", 100, lambda t: np.zeros((len(t), dim), np.float32))
    assert chunk_boundaries(tmp_path / "c.npy") == [128, 200]

    # interrupted after two chunks of 64, resumed with chunks of 192: the same file, boundaries recorded
    calls = []

    def failing(t):
        calls.append(len(t))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return embedder.encode(t)

    with pytest.raises(KeyboardInterrupt):
        embed(tmp_path / "d.npy", 64, failing)
    assert json.loads((tmp_path / "d.npy.progress.json").read_text())["rows"] == 128
    d = embed(tmp_path / "d.npy", 192)
    assert np.array_equal(a, d)
    assert chunk_boundaries(tmp_path / "d.npy") == [64, 128, 200]
    prog = json.loads((tmp_path / "d.npy.progress.json").read_text())
    assert prog["block"] == 64 and prog["segments"] == [[0, 128, 64], [128, 200, 192]]


def test_reference_embedding_is_checkpointed_and_equals_the_in_memory_one(embedder, tmp_path):
    from equal import Config
    from equal.reference import load_reference
    from equal.run import reference_vectors

    pairs = load_reference(str(REF_MATH)).pairs[:300]
    cfg = Config(corpus="c", reference=str(REF_MATH)).replace(
        **{"score.reference_sample": 40, "score.prior_sample": 150, "embed.chunk_docs": 64})
    replay = reference_vectors(embedder.encode, pairs, cfg)  # what a replay computes, in memory
    calls = []

    def failing(t):
        calls.append(len(t))
        if len(calls) == 3:  # the reward sample (one chunk), then one chunk of the prior sample
            raise KeyboardInterrupt
        return embedder.encode(t)

    with pytest.raises(KeyboardInterrupt):
        reference_vectors(failing, pairs, cfg, store=tmp_path, dim=embedder.dim)
    assert json.loads((tmp_path / "reference_reward.npy.progress.json").read_text())["rows"] == 40
    assert json.loads((tmp_path / "reference_prior.npy.progress.json").read_text())["rows"] == 64
    resumed_calls = []

    def counting(t):
        resumed_calls.append(len(t))
        return embedder.encode(t)

    live = reference_vectors(counting, pairs, cfg, store=tmp_path, dim=embedder.dim)
    assert resumed_calls == [64, 22]  # only what was not committed
    for a, b in zip(replay, live):
        assert a.shape == b.shape and np.array_equal(a, b)


def test_shared_embedding_cache_key_names_the_block_not_the_chunk(embedder, tmp_path):
    from conftest import write_jsonl
    from equal import Config
    from equal.corpus import Corpus
    from equal.run import embed_corpus

    path = write_jsonl(tmp_path / "c.jsonl", [{"id": f"d{i}", "text": t} for i, t in enumerate(_varied_texts(96))])
    corpus = Corpus(path)
    cfg = Config(corpus=str(path), reference=str(REF_MATH)).replace(
        **{"extract.cache_dir": str(tmp_path / "cache"), "embed.max_seq_length": 128})
    said = []
    first = np.asarray(embed_corpus(corpus, embedder, tmp_path / "r1" / "v.npy",
                                    cfg.replace(**{"embed.chunk_docs": 64}), progress=False, say=said.append))
    assert not said and len(list((tmp_path / "cache" / "embeddings").iterdir())) == 1
    # another chunk size: the same vectors, so the shared file is reused
    second = np.asarray(embed_corpus(corpus, embedder, tmp_path / "r2" / "v.npy",
                                     cfg.replace(**{"embed.chunk_docs": 192}), progress=False, say=said.append))
    assert len(said) == 1 and "reused" in said[0]
    assert np.array_equal(first, second)
    # another block (batch) size may change vectors: not reused, a second shared file
    old = embedder.batch_size
    embedder.batch_size = 32
    try:
        third = np.asarray(embed_corpus(corpus, embedder, tmp_path / "r3" / "v.npy", cfg, progress=False,
                                        say=said.append))
    finally:
        embedder.batch_size = old
    assert len(said) == 1
    assert len(list((tmp_path / "cache" / "embeddings").iterdir())) == 2
    assert json.loads((tmp_path / "r3" / "v.npy.progress.json").read_text())["block"] == 32
    assert np.allclose(first, third, atol=1e-5)


def test_restarting_an_embedding_never_rewrites_a_hard_linked_finished_file(tmp_path):
    # A finished corpus embedding is hard-linked into the shared cache and other run folders; restarting
    # one path (another key) must write a new file, not truncate the shared one in place.
    from equal.embed import embed_to_memmap

    def encode(texts):
        return np.array([[float(len(t)), 1.0] for t in texts], dtype=np.float32)

    a = tmp_path / "run_a" / "doc_vectors.npy"
    first = np.array(embed_to_memmap(a, 6, 2, lambda s, e: ["x" * i for i in range(s, e)], encode, chunk=2,
                                     progress=False, key={"model": "m1"}))
    linked = tmp_path / "cache.npy"
    os.link(a, linked)
    embed_to_memmap(a, 6, 2, lambda s, e: ["yy" * i for i in range(s, e)], encode, chunk=2, progress=False,
                    key={"model": "m2"})
    assert np.array_equal(np.load(linked), first)  # the shared file is untouched
    assert np.load(a)[3, 0] == 6.0  # the restarted path holds the new vectors
