"""Before spending: ``equal run --dry-run`` against the accounting of a real run, and the hard spend caps.

Everything goes through the command line (subprocesses, exit codes, stdout, the run folder) against the
OpenAI-protocol test server, which counts every request it is sent. One module-scoped server and one
uncapped run serve every test: the estimate is checked against that run's accounting, and each capped
run, once resumed with a higher cap, must end with the same ``dataset.jsonl``.

The capped runs send a different model name (the server answers every model alike, and the model is not
in ``dataset.jsonl``), so their requests miss the extraction cache the uncapped run filled, while the
corpus embedding, kept in the same cache root, is shared.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from conftest import equal_cli, write_slice
from equal.config import ExtractConfig, LLMConfig
from equal.extract.openai.extractor import OpenAIExtractor
from servers.fixtures import read_docs
from servers.openai_server import OpenAIServer, doc_key

pytestmark = [pytest.mark.slow, pytest.mark.needs_data]

N_DOCS = 100
BUDGET = 0.4  # 40 documents: 20 warm-up (one batch), then 4 rounds of 5
CONCURRENCY = 2
HISTORY_DOCS = 60  # documents after the slice, extracted once so the cache has a history of completions
FAST = ["--set", "embed.max_seq_length=64", "--set", "embed.chunk_docs=64", "--set", "align.warmup_fraction=0.5", "--set", "align.warmup_sampling=random",
        "--set", "score.prior_sample=50", "--set", "score.reference_sample=50", "-q"]


def run_cmd(corpus, out, server, cache, *extra, model="test-model"):
    from conftest import REF_MATH

    return ["run", "--corpus", corpus, "--reference", REF_MATH, "--out", out, "--budget", BUDGET,
            "--extractor", "openai", "--llm-base-url", server.url, "--llm-model", model,
            "--llm-concurrency", CONCURRENCY, "--cache-dir", cache, *FAST, *extra]


def extract_requests(server, since=0):
    return [s for s in server.seen[since:] if s.kind == "extract"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, slice400):
    base = tmp_path_factory.mktemp("budget")
    corpus = write_slice(base / "corpus.jsonl", N_DOCS, source=slice400)
    cache = base / "cache"
    server = OpenAIServer().start()
    try:
        # a history of completions in the cache: other documents of the corpus, the same model
        history = read_docs(HISTORY_DOCS, skip=N_DOCS)
        cfg = ExtractConfig(name="openai", cache_dir=str(cache),
                            llm=LLMConfig(base_url=server.url, model="test-model", concurrency=8))
        with OpenAIExtractor(cfg) as ex:
            assert all(r.status != "failed" for r in ex.extract(history))
        server.reset()
        cache_files = {p.name: p.stat().st_size for p in cache.iterdir()}

        dry = equal_cli(*run_cmd(corpus, base / "run", server, cache), "--dry-run", "--json")
        dry_requests = len(server.seen)
        dry_left = {"run_exists": (base / "run").exists(),
                    "cache_files": {p.name: p.stat().st_size for p in cache.iterdir()}}

        run = equal_cli(*run_cmd(corpus, base / "run", server, cache), "--json")
        yield {"base": base, "corpus": corpus, "cache": cache, "server": server, "dry": dry, "run": run,
               "dry_requests": dry_requests, "dry_left": dry_left, "cache_files": cache_files}
    finally:
        server.stop()


def test_dry_run_sends_nothing_and_writes_no_run_folder(setup):
    dry = setup["dry"]
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert setup["dry_requests"] == 0  # the server saw no request at all
    assert setup["dry_left"]["run_exists"] is False
    assert setup["dry_left"]["cache_files"] == setup["cache_files"]  # the cache was only read
    est = json.loads(dry.stdout)  # exactly one JSON object on stdout
    assert set(est) >= {"calls", "prompt_tokens", "completion_tokens", "cost"}
    assert est["cost"] is None  # no prices set
    assert est["completion_source"].startswith("cache")  # taken from the history, not the default


def test_estimate_matches_the_accounting_of_the_real_run(setup):
    run = setup["run"]
    assert run.returncode == 0, run.stderr[-3000:]
    est = json.loads(setup["dry"].stdout)
    summary = json.loads(run.stdout)  # --json: the final summary, nothing else on stdout
    assert summary == {**json.loads((setup["base"] / "run" / "summary.json").read_text()),
                       "run_dir": str(setup["base"] / "run"), "already_finished": False}
    ex = summary["extractor"]
    assert ex["cache_hits"] == 0 and ex["retries"] == 0
    # calls: exact
    assert est["calls"] == round(BUDGET * N_DOCS) == ex["calls"] == summary["extraction_calls"]
    assert len(extract_requests(setup["server"])) == est["calls"]
    # tokens: the run's accounting agrees with what the server reported, and the estimate is within 15%
    assert (summary["llm_usage"]["prompt_tokens"], summary["llm_usage"]["completion_tokens"]) == \
        setup["server"].usage() == (ex["prompt_tokens"], ex["completion_tokens"])
    actual = ex["prompt_tokens"] + ex["completion_tokens"]
    estimated = est["prompt_tokens"] + est["completion_tokens"]
    print(f"estimate {est['prompt_tokens']} + {est['completion_tokens']} = {estimated}; "
          f"actual {ex['prompt_tokens']} + {ex['completion_tokens']} = {actual}; ratio {estimated / actual:.3f}")
    assert abs(estimated - actual) <= 0.15 * actual


def test_dry_run_prices_and_human_summary(setup):
    prices = ["--set", "extract.llm.price_prompt_per_mtok=2", "--set", "extract.llm.price_completion_per_mtok=8"]
    r = equal_cli(*run_cmd(setup["corpus"], setup["base"] / "priced", setup["server"], setup["cache"]), *prices,
                  "--dry-run", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    est = json.loads(r.stdout)
    assert est["cost"] == pytest.approx(est["prompt_tokens"] * 2e-6 + est["completion_tokens"] * 8e-6)
    human = equal_cli(*run_cmd(setup["corpus"], setup["base"] / "priced", setup["server"], setup["cache"]),
                      *prices, "--dry-run")
    assert human.returncode == 0 and "40 extraction requests" in human.stdout and "cost:" in human.stdout
    assert not (setup["base"] / "priced").exists()


def capped_then_resumed(setup, name, cap, higher, *resume_flags):
    """A run stopped by ``cap``, then the same command with ``higher``: the two processes, the extraction
    requests the server saw from them, how many the stopped one sent, the run folder."""
    server, out = setup["server"], setup["base"] / name
    since = len(server.seen)
    cmd = run_cmd(setup["corpus"], out, server, setup["cache"], "--set", "extract.llm.price_prompt_per_mtok=2",
                  "--set", "extract.llm.price_completion_per_mtok=8", model=f"model-{name}")
    stopped = equal_cli(*cmd, "--set", cap)
    stopped_requests = len(extract_requests(server, since))
    assert not (out / "summary.json").exists()  # stopped before the end
    assert (out / "state" / "checkpoint.json").exists()  # ... with its state saved
    resumed = equal_cli(*cmd, "--set", higher, *resume_flags)
    return stopped, resumed, extract_requests(server, since), stopped_requests, out


def check_capped(setup, stopped, resumed, requests, stopped_requests, out, key):
    assert setup["run"].returncode == 0
    assert stopped.returncode == 3, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    err = [line for line in stopped.stderr.splitlines() if line.startswith("equal: stopped")]
    assert len(err) == 1 and f"extract.llm.{key}" in err[0] and "resume" in err[0], stopped.stderr[-2000:]
    assert 0 < stopped_requests < round(BUDGET * N_DOCS)  # after some, not all, of the requests
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # nothing lost, nothing duplicated: the uncapped run's dataset and rounds, byte for byte
    for name in ("dataset.jsonl", "rounds.jsonl", "extracted.jsonl"):
        assert (out / name).read_bytes() == (setup["base"] / "run" / name).read_bytes(), name
    # and every document was paid for once, across the stop and the resume
    assert Counter(Counter(s.doc for s in requests).values()) == {1: round(BUDGET * N_DOCS)}
    return json.loads((out / "summary.json").read_text())


def test_token_cap_stops_the_run_and_a_higher_cap_resumes_it(setup):
    total = sum(json.loads(setup["run"].stdout)["llm_usage"][k] for k in ("prompt_tokens", "completion_tokens"))
    cap = int(total * 0.6)  # lands in the selection rounds
    stopped, resumed, requests, n_stopped, out = capped_then_resumed(
        setup, "tokens", f"extract.llm.max_tokens_total={cap}", f"extract.llm.max_tokens_total={total * 2}")
    summary = check_capped(setup, stopped, resumed, requests, n_stopped, out, "max_tokens_total")
    assert n_stopped > 20  # the warm-up batch (20 documents) finished first
    # the stopped process spent at least the cap, and at most the cap plus the responses in flight
    largest = max(s.prompt_tokens + s.completion_tokens for s in requests)
    spent = sum(s.prompt_tokens + s.completion_tokens for s in requests[:n_stopped])
    assert cap <= spent <= cap + CONCURRENCY * largest
    assert summary["llm_usage"]["total_tokens"] == sum(s.prompt_tokens + s.completion_tokens for s in requests)
    # the end-of-run table on stdout (no --json), with the whole run's usage
    table = resumed.stdout
    assert "documents extracted" in table and "40 of 100" in table and "summary:" in table
    assert f"{summary['llm_usage']['prompt_tokens']:,} prompt + {summary['llm_usage']['completion_tokens']:,}" in table


def test_cost_cap_stops_the_run_and_a_higher_cap_resumes_it(setup):
    usage = json.loads(setup["run"].stdout)["llm_usage"]
    cost = usage["prompt_tokens"] * 2e-6 + usage["completion_tokens"] * 8e-6
    stopped, resumed, requests, n_stopped, out = capped_then_resumed(
        setup, "cost", f"extract.llm.max_cost={cost * 0.25:.6f}", f"extract.llm.max_cost={cost * 2:.6f}",
        "--json", "--log-level", "info")
    summary = check_capped(setup, stopped, resumed, requests, n_stopped, out, "max_cost")
    # --json: the summary alone on stdout; --log-level info: the status lines as log records on stderr
    assert json.loads(resumed.stdout)["llm_usage"] == summary["llm_usage"]
    assert "INFO equal: resuming the run in" in resumed.stderr
    assert n_stopped < 20  # stopped inside the warm-up batch: its finished documents came from the cache
    assert summary["llm_usage"]["cost"] == pytest.approx(
        sum(s.prompt_tokens for s in requests) * 2e-6 + sum(s.completion_tokens for s in requests) * 8e-6)
    assert summary["llm_usage"]["cost"] == pytest.approx(cost)


def test_a_cap_without_prices_is_refused(setup, tmp_path):
    r = equal_cli(*run_cmd(setup["corpus"], tmp_path / "run", setup["server"], setup["cache"]),
                  "--set", "extract.llm.max_cost=1")
    assert r.returncode == 2 and "needs a price" in r.stderr
    assert not (tmp_path / "run").exists()
