"""The openai extractor against a real HTTP server that misbehaves in one way per test.

After every fault the extraction finishes, every document is accounted for
exactly once (ok / empty / failed, or from the cache), and the extractor's
counts agree with what the server saw.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from equal.extract.openai.extractor import OpenAIExtractor
from equal.extract.openai.transport import CONTENT_ATTEMPTS
from servers.fixtures import llm_config, openai_server, read_docs  # noqa: F401
from servers.openai_server import doc_key

pytestmark = pytest.mark.needs_data  # every test extracts real documents of the shared corpus


@pytest.fixture(scope="module")
def docs():
    return read_docs(12, max_chars=3000)


def check_accounting(docs, results, ex, server, cached=0):
    """Every document once; stats agree with the server's own records."""
    assert len(results) == len(docs)
    st = ex.stats()
    statuses = Counter(r.status for r in results)
    assert set(statuses) <= {"ok", "empty", "failed"}
    assert st["docs"] == len(docs)
    assert st["docs_ok"] == statuses["ok"] and st["docs_empty"] == statuses["empty"]
    assert st["docs_failed"] == statuses["failed"]
    assert st["docs_ok"] + st["docs_empty"] + st["docs_failed"] == len(docs)
    assert st["cache_hits"] == cached == sum(r.cached for r in results)
    assert sum(st["failures"].values()) == statuses["failed"]
    for r in results:
        if r.status == "failed":
            assert r.reason and not r.pairs and not r.cached
        if r.status == "ok":
            assert r.pairs
    # the server saw exactly the requests the extractor counted, and sent the usage it counted
    assert st["calls"] == server.count(kind="extract")
    assert st["refine_calls"] == server.count(kind="refine")
    assert (st["prompt_tokens"] + st["refine_prompt_tokens"],
            st["completion_tokens"] + st["refine_completion_tokens"]) == server.usage()
    docs_with_requests = len(server.docs_seen())
    assert st["retries"] == st["calls"] - docs_with_requests
    assert st["pairs"] == sum(len(r.pairs) for r in results)
    return st


def grounded(results, docs):
    for r, d in zip(results, docs):
        for p in r.pairs:
            assert p.doc_id == d.id and p.extractor == "openai"
            assert p.answer in d.text  # the server's answers are sentences of the document


def test_no_fault_grounded_pairs_and_usage(openai_server, llm_config, docs, monkeypatch):
    monkeypatch.delenv("EQUAL_TEST_API_KEY", raising=False)
    with OpenAIExtractor(llm_config) as ex:
        results = ex.extract(docs)
        st = check_accounting(docs, results, ex, openai_server)
    assert all(r.status == "ok" for r in results)
    grounded(results, docs)
    assert st["calls"] == len(docs) and st["retries"] == 0 and st["errors"] == {}
    assert st["prompt_tokens"] > 0 and st["completion_tokens"] > 0
    assert sum(r.stats["prompt_tokens"] for r in results) == st["prompt_tokens"]
    seen = openai_server.seen
    assert {s.response_format for s in seen} == {"json_schema"}
    assert {s.auth for s in seen} == {"Bearer EMPTY"}  # no key in the environment: a placeholder
    assert set(openai_server.docs_seen().values()) == {1}
    assert set(openai_server.docs_seen()) == {doc_key(d.text) for d in docs}


def test_429_honours_retry_after(openai_server, llm_config, docs):
    f = openai_server.faults
    f.mode, f.first_n, f.retry_after = "429", 3, "1"
    f.ok_latency = 0.5  # the 429s are answered at once, the others after 0.5 s: the client sees a 429 first
    assert llm_config.llm.concurrency == 8 < len(docs)
    with OpenAIExtractor(llm_config) as ex:
        results = ex.extract(docs)
        st = check_accounting(docs, results, ex, openai_server)
    assert all(r.status == "ok" for r in results)
    assert st["errors"] == {"http_429": 3} == {"http_429": openai_server.count(status=429)}
    assert st["retries"] == 3
    seen = openai_server.seen
    first_429 = min(s.t for s in seen if s.status == 429)
    assert first_429 == min(s.t for s in seen)  # the first requests to arrive got the 429s
    # Retry-After pauses every request, not only the one that got the 429: after the first wave (8 requests
    # in flight at once, sent before any answer) nothing arrives within the second the server asked for.
    # Arrival order, not a time window, tells the waves apart, so a slow machine cannot blur them.
    later = sorted(s.t for s in seen)[llm_config.llm.concurrency:]
    assert len(later) == len(seen) - 8 == len(docs) - 8 + 3
    assert min(later) >= first_429 + 0.95
    for key in {s.doc for s in seen if s.status == 429}:
        times = sorted(s.t for s in seen if s.doc == key)
        assert len(times) == 2 and times[1] - times[0] >= 0.95


def test_429_on_every_attempt_fails_the_document(openai_server, llm_config, docs):
    f = openai_server.faults
    f.mode, f.per_doc, f.retry_after = "429", 99, None
    llm_config.llm.max_attempts = 3
    sick = docs[:4]
    with OpenAIExtractor(llm_config) as ex:
        results = ex.extract(sick)
        st = check_accounting(sick, results, ex, openai_server)
    assert [r.reason for r in results] == ["http_429"] * 4
    assert st["failures"] == {"http_429": 4}
    assert set(openai_server.docs_seen().values()) == {3}  # bounded attempts
    assert st["backoff_seconds"] > 0


@pytest.mark.parametrize("mode,reason", [("500", "http_500"), ("503", "http_503"), ("drop", "connection")])
def test_transient_errors_are_retried(openai_server, llm_config, docs, mode, reason):
    f = openai_server.faults
    f.mode, f.per_doc, f.retry_after = mode, 1, None
    with OpenAIExtractor(llm_config) as ex:
        results = ex.extract(docs)
        st = check_accounting(docs, results, ex, openai_server)
    assert all(r.status == "ok" for r in results)
    grounded(results, docs)
    assert st["errors"] == {reason: len(docs)}
    assert st["retries"] == len(docs)
    assert set(openai_server.docs_seen().values()) == {2}
    assert all(r.stats["attempts"] == 2 for r in results)


def test_persistent_500_fails_after_max_attempts(openai_server, llm_config, docs):
    f = openai_server.faults
    bad = {doc_key(d.text) for d in docs[::3]}
    f.mode, f.docs = "500", bad
    with OpenAIExtractor(llm_config) as ex:
        results = ex.extract(docs)
        st = check_accounting(docs, results, ex, openai_server)
    for r, d in zip(results, docs):
        if doc_key(d.text) in bad:
            assert (r.status, r.reason) == ("failed", "http_500")
        else:
            assert r.status == "ok"
    assert st["failures"] == {"http_500": len(bad)}
    assert all(openai_server.docs_seen()[k] == llm_config.llm.max_attempts for k in bad)


def test_hang_past_timeout_is_retried(openai_server, llm_config, docs):
    f = openai_server.faults
    f.mode, f.per_doc, f.hang_seconds = "hang", 1, 120
    llm_config.llm.timeout = 2.0
    few = docs[:6]
    t0 = time.monotonic()
    with OpenAIExtractor(llm_config) as ex:
        results = ex.extract(few)
        st = check_accounting(few, results, ex, openai_server)
    # the client gave up on its own ("timeout", not the "connection" error it gets when the server drops
    # the hung request after hang_seconds), and retried: long before the hang would have ended
    assert time.monotonic() - t0 < f.hang_seconds / 2
    assert all(r.status == "ok" for r in results)
    assert st["errors"] == {"timeout": len(few)}
    assert openai_server.count(status="hang") == len(few)


def test_hang_on_every_attempt_fails_as_timeout(openai_server, llm_config, docs):
    f = openai_server.faults
    f.mode, f.always, f.hang_seconds = "hang", True, 20
    llm_config.llm.timeout, llm_config.llm.max_attempts = 0.3, 2
    few = docs[:3]
    with OpenAIExtractor(llm_config) as ex:
        results = ex.extract(few)
        st = check_accounting(few, results, ex, openai_server)
    assert [r.reason for r in results] == ["timeout"] * 3
    assert st["failures"] == {"timeout": 3}


@pytest.mark.parametrize("mode,reason", [("invalid_json", "invalid_json"), ("empty", "empty_content")])
def test_bad_content_retried_once_then_failed(openai_server, llm_config, docs, mode, reason):
    f = openai_server.faults
    bad = {doc_key(d.text) for d in docs[:4]}
    once = {doc_key(d.text) for d in docs[4:8]}
    f.mode, f.docs = mode, bad
    with OpenAIExtractor(llm_config) as ex:
        results = ex.extract(docs[:4])  # bad on every attempt
        f.docs, f.per_doc = set(), 1
        results += ex.extract(docs[4:8])  # bad on the first attempt only
        st = check_accounting(docs[:8], results, ex, openai_server)
    assert [r.status for r in results] == ["failed"] * 4 + ["ok"] * 4
    assert all(r.reason == reason for r in results[:4])
    seen = openai_server.docs_seen()
    assert all(seen[k] == CONTENT_ATTEMPTS == 2 for k in bad)  # not retried more than once
    assert all(seen[k] == 2 for k in once)
    assert st["failures"] == {reason: 4}
    assert st["errors"] == {reason: 4 * 2 + 4}


def test_truncated_completion_is_salvaged_or_failed(openai_server, llm_config, docs):
    llm_config.llm.max_tokens = 60  # the server cuts its content at 4 * max_tokens characters
    openai_server.faults.pairs_per_doc = 4
    with OpenAIExtractor(llm_config) as ex:
        results = ex.extract(docs)
        st = check_accounting(docs, results, ex, openai_server)
    assert st["truncated_completions"] == st["calls"] > 0  # every answer was cut by the token limit
    assert any(r.status == "ok" for r in results)  # complete pairs before the cut are kept
    grounded(results, docs)
    for r in results:
        assert r.status == "ok" or r.reason in ("invalid_json", "no_valid_pairs")


def test_repeat_uses_cache_and_retries_only_failures(openai_server, llm_config, docs):
    f = openai_server.faults
    bad = {doc_key(d.text) for d in docs[:3]}
    f.mode, f.docs = "invalid_json", bad
    with OpenAIExtractor(llm_config) as ex:
        first = ex.extract(docs)
        check_accounting(docs, first, ex, openai_server)
    assert sum(r.status == "failed" for r in first) == 3

    openai_server.reset()
    f.docs = set()
    with OpenAIExtractor(llm_config) as ex:  # a new process would do the same: the cache is on disk
        second = ex.extract(docs)
        st = check_accounting(docs, second, ex, openai_server, cached=len(docs) - 3)
    assert set(openai_server.docs_seen()) == bad  # zero requests for documents already extracted
    assert st["calls"] == 3
    for a, b in zip(first, second):
        if a.status == "ok":
            assert b.cached and [(p.question, p.answer, p.doc_id) for p in a.pairs] == \
                [(p.question, p.answer, p.doc_id) for p in b.pairs]
        else:
            assert not b.cached and b.status == "ok"

    openai_server.reset()
    llm_config.cache = False
    with OpenAIExtractor(llm_config) as ex:
        ex.extract(docs[:2])
    assert openai_server.count(kind="extract") == 2  # cache off: requests again


@pytest.mark.parametrize("mode,reason", [("drop", "connection"), ("hang", "timeout"), ("500", "http_500")])
def test_httpx_transport_reports_the_same_reasons(openai_server, llm_config, docs, monkeypatch, mode, reason):
    import equal.extract.openai.transport as llm_mod

    monkeypatch.setattr(llm_mod, "USE_AIOHTTP", False)  # the openai client's default httpx transport
    f = openai_server.faults
    f.mode, f.per_doc, f.retry_after, f.hang_seconds = mode, 1, None, 120
    llm_config.llm.timeout = 2.0  # the retry of a hung request must finish within it, on a loaded machine too
    few = docs[:4]
    with OpenAIExtractor(llm_config) as ex:
        results = ex.extract(few)
        st = check_accounting(few, results, ex, openai_server)
    assert all(r.status == "ok" for r in results)
    assert st["errors"] == {reason: 4}


def test_httpx_transport_server_down_is_a_connection_error(llm_config, docs, monkeypatch):
    import equal.extract.openai.transport as llm_mod
    from servers.openai_server import OpenAIServer

    monkeypatch.setattr(llm_mod, "USE_AIOHTTP", False)
    s = OpenAIServer().start()
    llm_config.llm.base_url = s.url
    s.stop()
    llm_config.llm.max_attempts = 2
    with OpenAIExtractor(llm_config) as ex:
        results = ex.extract(docs[:2])
    assert [(r.status, r.reason) for r in results] == [("failed", "connection")] * 2
