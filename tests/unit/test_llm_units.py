"""The units of the ``openai`` extractor, each alone (no server): spend, pacing, breaker, dialect, loop, stats."""

from __future__ import annotations

import asyncio
import email.utils
import threading
import time

import pytest

from equal.config import ExtractConfig, LLMConfig
from equal.extract.base import SpendAware, tell_spend_base
from equal.extract.heuristic import HeuristicExtractor
from equal.extract.openai.extractor import OpenAIExtractor
from equal.extract.openai.loop import LoopThread
from equal.extract.openai.parse import PAIRS_SCHEMA
from equal.extract.openai.prompt import Tokens
from equal.extract.openai.rate import Bucket, Pause, retry_after
from equal.extract.openai.spend import CapStop, Spend, spend_cost
from equal.extract.openai.stats import STATS_KEYS, merge
from equal.extract.openai.transport import Breaker, Dialect


class _Usage:
    def __init__(self, p: int, c: int) -> None:
        self.prompt_tokens, self.completion_tokens = p, c


# --------------------------------------------------------------------------- spend
def test_spend_counts_usage_by_kind_and_caps_on_base_plus_own():
    llm = LLMConfig(max_tokens_total=1000)
    s = Spend(llm)
    assert s.record("extract", _Usage(100, 20)) == (100, 20)
    assert s.record("refine", _Usage(50, 5)) == (50, 5)
    assert s.record("extract", None) == (0, 0)
    assert s.stats() == {"prompt_tokens": 100, "completion_tokens": 20, "refine_prompt_tokens": 50,
                         "refine_completion_tokens": 5, "missing_usage": 1}
    assert s.total() == (150, 25) and s.over_cap() is None
    s.check()  # under the cap: no stop
    s.base = (800, 25)  # earlier processes of the run
    assert s.total() == (950, 50)
    assert s.over_cap() == "extract.llm.max_tokens_total=1000 reached (1000 tokens spent: 950 prompt, 50 completion)"
    with pytest.raises(CapStop, match="max_tokens_total=1000"):
        s.check()
    assert s.cost() is None  # no price set


def test_spend_cost_cap_and_estimated_cost():
    llm = LLMConfig(price_prompt_per_mtok=2.0, price_completion_per_mtok=8.0, max_cost=0.001)
    assert spend_cost(1_000_000, 0, llm) == 2.0 and spend_cost(0, 0, LLMConfig()) is None
    s = Spend(llm)
    s.record("extract", _Usage(300, 40))
    assert s.cost() == pytest.approx(300 * 2e-6 + 40 * 8e-6) and s.over_cap() is None
    s.base = (100, 10)  # counted against the cap, not in this extractor's own cost
    assert s.over_cap().startswith("extract.llm.max_cost=0.001 reached")
    assert s.cost() == pytest.approx(300 * 2e-6 + 40 * 8e-6)


# --------------------------------------------------------------------------- stats
def test_merge_orders_the_units_stats_and_rejects_clashes_and_gaps():
    parts = [{k: i for i, k in enumerate(STATS_KEYS) if i % 2 == 0},
             {k: i for i, k in enumerate(STATS_KEYS) if i % 2 == 1}]
    merged = merge(*reversed(parts))
    assert list(merged) == list(STATS_KEYS) and merged["docs"] == 0
    with pytest.raises(AssertionError, match="twice"):
        merge(parts[0], parts[1], {"docs": 1})
    with pytest.raises(AssertionError, match="differ"):
        merge(parts[0])


def test_fresh_extractor_stats_have_every_key_in_order(tmp_path):
    ex = OpenAIExtractor(ExtractConfig(name="openai", cache=False, llm=LLMConfig(price_prompt_per_mtok=1.0)))
    try:
        st = ex.stats()
    finally:
        ex.close()
    assert list(st) == [*STATS_KEYS, "estimated_cost"]
    assert st["estimated_cost"] == 0.0 and st["response_format"] == "json_schema"
    assert st["errors"] == {} and st["wall_seconds"] == 0.0


# --------------------------------------------------------------------------- spend base (the pipeline's side)
def test_set_spend_base_is_the_protocol_and_the_old_attribute_still_works():
    ex = OpenAIExtractor(ExtractConfig(name="openai", cache=False, llm=LLMConfig(max_tokens_total=10)))
    try:
        assert isinstance(ex, SpendAware)
        assert tell_spend_base(ex, 7, 3) is True
        assert ex.spend_base == (7, 3) and ex.spend() == (7, 3)
        assert ex._spend.over_cap() is not None  # 10 tokens counted against the cap of 10
        ex.spend_base = (1, 2)  # what run.py still sets
        assert ex.spend() == (1, 2) and ex.stats()["prompt_tokens"] == 0  # the base is not in stats()
    finally:
        ex.close()
    heuristic = HeuristicExtractor()
    assert not isinstance(heuristic, SpendAware) and tell_spend_base(heuristic, 7, 3) is False


# --------------------------------------------------------------------------- pacing
def test_retry_after_forms():
    assert retry_after({"retry-after-ms": "250"}) == 0.25
    assert retry_after({"retry-after": "3"}) == 3.0
    assert retry_after({"retry-after": "-2"}) == 0.0
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 < retry_after({"retry-after": when}) <= 30
    assert retry_after({"retry-after": "soon"}) is None and retry_after({}) is None and retry_after(None) is None


def test_bucket_bursts_one_second_then_paces_and_takes_credit():
    async def go() -> tuple[float, float, float, float]:
        b = Bucket(600)  # 10 a second, bursts of 10
        w1 = await b.acquire(10)
        t0 = time.monotonic()
        w2 = await b.acquire(3)  # 0.3 s of refill needed
        elapsed = time.monotonic() - t0
        b.credit(5)
        return w1, w2, elapsed, b.level

    w1, w2, elapsed, level = asyncio.run(go())
    assert w1 == 0.0
    assert 0.25 < w2 < 0.4 and elapsed >= 0.25
    assert 4.5 < level <= 5.5  # the credit came back (up to the capacity)


def test_pause_holds_requests_until_retry_after_and_counts_the_wait():
    async def go() -> tuple[float, float]:
        p = Pause()
        p.extend(0.2)
        p.extend(0.05)  # a shorter one does not shorten the pause
        t0 = time.monotonic()
        await p.wait()
        return time.monotonic() - t0, p.waited

    elapsed, waited = asyncio.run(go())
    assert elapsed >= 0.19 and 0.15 < waited < 0.3


# --------------------------------------------------------------------------- breaker and dialect
def test_breaker_trips_after_its_window_and_not_for_idle_time():
    async def go() -> None:
        b = Breaker(0.1)
        ev = b.arm()
        b.failure("http_500")
        assert not ev.is_set()
        time.sleep(0.12)
        b.failure("timeout")
        assert ev.is_set() and b.tripped and b.last_error == "timeout"
        b.reset()
        ev = b.arm()
        b.failure("http_500")
        b.idle()
        time.sleep(0.12)  # between batches: not failing time
        b.resume()
        b.failure("http_500")
        assert not ev.is_set()
        b.success()
        assert b.failing_since is None

    asyncio.run(go())


def test_dialect_falls_back_once_when_json_schema_is_rejected():
    d = Dialect("json_schema")
    assert d.response_format()["json_schema"]["schema"] is PAIRS_SCHEMA
    assert not d.rejected("json_schema", 400, "max_tokens too large")  # another 400: not a dialect problem
    assert d.rejected("json_schema", 500, "response_format: unknown type json_schema")
    assert d.name == "json_object+schema"
    assert d.response_format() == {"type": "json_object", "schema": PAIRS_SCHEMA}
    # a request sent before the switch, rejected after it: sent again, no second switch
    assert d.rejected("json_schema", 422, "anything") and d.name == "json_object+schema"
    assert not d.rejected("json_object+schema", 400, "bad")
    assert Dialect("json_object").response_format() == {"type": "json_object"}
    assert Dialect("none").response_format() is None


# --------------------------------------------------------------------------- loop and tokens
def test_loop_thread_runs_coroutines_in_its_thread_and_cleans_up():
    lt = LoopThread("unit-loop")
    seen: list[str] = []

    async def where() -> str:
        return threading.current_thread().name

    async def boom() -> None:
        raise ValueError("inside")

    async def cleanup() -> None:
        seen.append(threading.current_thread().name)

    assert lt.run(where()) == "unit-loop"
    with pytest.raises(ValueError, match="inside"):
        lt.run(boom())
    assert lt.run(where()) == "unit-loop"  # the loop survives an error
    lt.close(cleanup)
    assert seen == ["unit-loop"]
    assert not any(t.name == "unit-loop" for t in threading.enumerate())


def test_tokens_without_a_tokenizer_count_characters_and_cut_at_a_word():
    t = Tokens(None)
    assert t.count("abcdefghi") == 3  # ceil(9 / 4)
    text = "word " * 100
    cut, was = t.truncate(text, 10)  # 40 characters
    assert was and len(cut) <= 40 and cut.endswith("word")
    assert t.truncate("short", 10) == ("short", False)
