"""Faults seen from the command line: an LLM endpoint that dies in the middle of a run, and SIGINT.

Each test drives ``equal run`` as a user would (a subprocess, its exit code, its stderr) and judges the
result by the run folder's files and by what the test server saw; nothing inside the pipeline is used.
"""

import json
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from conftest import equal_cli, run_args, write_slice
from servers.openai_server import Faults, OpenAIServer

pytestmark = [pytest.mark.slow, pytest.mark.needs_data]

CONCURRENCY = 4
BUDGET = 40  # 20 warm-up documents, then 2 bandit rounds of 10
DIES_AFTER = 25  # extraction requests answered before the endpoint goes away: in the middle of round 1


def outputs(run_dir):
    return {name: (run_dir / name).read_bytes() for name in ("dataset.jsonl", "rounds.jsonl")}


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("equal: error")]


# --------------------------------------------------------------------------- the endpoint dies mid-run
@pytest.fixture(scope="module")
def llm_corpus(slice400, tmp_path_factory):
    return write_slice(tmp_path_factory.mktemp("llm-cli") / "corpus200.jsonl", 200, source=slice400)


def llm_args(corpus, out, url, cache):
    # retries never give a document up while the endpoint is down (max_attempts); the breaker stops the run
    return run_args(corpus, out, "--extractor", "openai", "--llm-base-url", url, "--llm-model", "test-model",
                    "--llm-concurrency", CONCURRENCY, "--cache-dir", cache,
                    "--set", "extract.llm.circuit_breaker_seconds=1", "--set", "extract.llm.max_attempts=1000",
                    "--set", "extract.llm.backoff_base=0.05", "--set", "extract.llm.backoff_max=0.2",
                    budget=BUDGET)


def answered(server):
    """Extraction requests the server answered (HTTP 200), per document."""
    return Counter(s.doc for s in server.seen if s.kind == "extract" and s.status == 200)


@pytest.fixture(scope="module")
def endpoint_dies(llm_corpus, tmp_path_factory):
    """A run whose endpoint stops answering (connections dropped) after DIES_AFTER requests, then the same
    command once it is back; and a clean run against a healthy server, without the extraction cache."""
    base = tmp_path_factory.mktemp("endpoint-dies")
    flaky = OpenAIServer(Faults(mode="drop", after_n=DIES_AFTER)).start()
    healthy = OpenAIServer().start()
    try:
        cmd = llm_args(llm_corpus, base / "run", flaky.url, base / "cache")
        died = equal_cli(*cmd)
        answered_before = answered(flaky)
        summary_after_death = (base / "run" / "summary.json").exists()
        flaky.faults = Faults()  # the endpoint is back
        resumed = equal_cli(*cmd)
        # no extraction cache (its own requests, all of them); the corpus embedding is shared (faster)
        clean = equal_cli(*llm_args(llm_corpus, base / "clean", healthy.url, base / "cache"), "--no-cache")
    finally:
        flaky.stop()
        healthy.stop()
    return {"dir": base, "died": died, "resumed": resumed, "clean": clean, "flaky": flaky, "healthy": healthy,
            "answered_before": answered_before, "summary_after_death": summary_after_death}


def test_dead_endpoint_stops_the_run_with_exit_2_and_one_line(endpoint_dies):
    died = endpoint_dies["died"]
    assert died.returncode == 2, died.stderr[-3000:]
    assert "Traceback" not in died.stderr, died.stderr[-3000:]
    errors = error_lines(died.stderr)
    assert len(errors) == 1, died.stderr[-3000:]
    assert "run the same command again" in errors[0].lower() or "resume" in errors[0].lower(), errors[0]
    assert not endpoint_dies["summary_after_death"]  # it did stop before the end
    # it died where it was meant to: in the middle, after DIES_AFTER answers
    assert sum(endpoint_dies["answered_before"].values()) == DIES_AFTER


def test_same_command_finishes_once_the_endpoint_is_back(endpoint_dies):
    resumed = endpoint_dies["resumed"]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stderr
    summary = json.loads((endpoint_dies["dir"] / "run" / "summary.json").read_text())
    assert summary["docs_extracted"] == BUDGET


def test_resumed_run_equals_a_clean_run(endpoint_dies):
    assert endpoint_dies["clean"].returncode == 0, endpoint_dies["clean"].stderr[-3000:]
    assert endpoint_dies["resumed"].returncode == 0
    run, clean = outputs(endpoint_dies["dir"] / "run"), outputs(endpoint_dies["dir"] / "clean")
    assert run["dataset.jsonl"] and run == clean


def test_no_document_is_paid_for_twice(endpoint_dies):
    flaky, healthy = answered(endpoint_dies["flaky"]), answered(endpoint_dies["healthy"])
    assert sum(healthy.values()) == len(healthy) == BUDGET  # the clean run: one answer per document
    assert set(flaky) == set(healthy)  # the interrupted run asked for the same documents ...
    repeats = sum(n - 1 for n in flaky.values())
    # ... each answered once, but for those whose request was in flight when the endpoint died
    assert repeats <= CONCURRENCY, {d: n for d, n in flaky.items() if n > 1}
    assert sum(flaky.values()) <= BUDGET + CONCURRENCY


# --------------------------------------------------------------------------- SIGINT
def test_sigint_saves_and_the_same_command_resumes(slice400, math_cli_run, tmp_path):
    out = tmp_path / "run"
    # embed.cache=false: the corpus is embedded by this run (seconds), not taken from the shared cache
    args = run_args(slice400, out, "--set", "embed.cache=false")
    p = subprocess.Popen([sys.executable, "-m", "equal.cli", *map(str, args)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    checkpoint = out / "state" / "checkpoint.json"  # written after the first unit of work
    deadline = time.monotonic() + 300
    try:
        while not checkpoint.exists() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert p.poll() is None, "the run ended before it could be interrupted:\n" + p.stderr.read()[-3000:]
        assert checkpoint.exists()
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 128 + signal.SIGINT == 130, err[-3000:]
    assert "Resume with the same command" in err and "Traceback" not in err, err[-3000:]
    assert not (out / "summary.json").exists()

    r = equal_cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming" in r.stderr
    assert outputs(out) == outputs(math_cli_run[0])  # the same as an uninterrupted run
