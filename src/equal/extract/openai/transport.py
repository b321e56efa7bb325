"""Requests to an OpenAI-compatible chat-completions endpoint: retries, pacing, dialect and breaker.

:class:`Transport` sends one prompt as one user message (``client.post("/chat/completions", ...)``,
the same POST as ``chat.completions.create``) with the client's own retries turned off, at most
``llm.concurrency`` requests in flight:

* 429, 408, 409, 425, 5xx, timeouts and connection errors are retried up to ``llm.max_attempts``
  attempts with exponential backoff and jitter, honouring ``Retry-After`` (which also pauses every other
  request; see :mod:`.rate`). A 200 whose content is empty or holds no JSON is retried once.
* ``response_format`` is ``json_schema``, ``json_object`` or none per ``llm.response_format``; a server that
  rejects ``json_schema`` by naming it, like llama-cpp-python, gets ``{"type": "json_object", "schema": ...}``
  from then on (:class:`Dialect`).
* :class:`Breaker`: requests that fail at the transport or HTTP level for ``llm.circuit_breaker_seconds``
  with no success in between set the batch's trip event.
* The spend caps are checked right before each request is sent (:meth:`.spend.Spend.check`).

The API key is read from the environment variable named by ``llm.api_key_env`` (``"EMPTY"`` when unset:
local servers need none) and is never logged, printed or put in an exception.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .parse import PAIRS_SCHEMA, parse_pairs
from .rate import Bucket, Pause, retry_after
from .spend import Spend
from .stats import counters

log = logging.getLogger(__name__)

#: A 200 response with empty or unparsable content is tried at most this many times per document.
CONTENT_ATTEMPTS = 2
#: Send requests through aiohttp (openai.DefaultAioHttpClient) where it is installed; else httpx.
USE_AIOHTTP = True

_RETRYABLE_STATUS = {408, 409, 425, 429}


def redact_url(url: str) -> str:
    """``url`` without user:password."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        parts = parts._replace(netloc=host)
    return urlunsplit(parts)


def transport_reason(exc: BaseException) -> str:
    """``timeout`` or ``connection``, from the error at the root of the chain.

    The aiohttp transport reports a refused or dropped connection as a connect
    *timeout*; the root cause (an ``aiohttp.ClientConnectionError`` or ``OSError``)
    tells them apart.
    """
    root, seen = exc, 0
    while seen < 16:
        nxt = root.__cause__ or root.__context__
        if nxt is None:
            break
        root, seen = nxt, seen + 1
    if isinstance(root, TimeoutError):  # asyncio/aiohttp timeouts included (checked before OSError)
        return "timeout"
    if isinstance(root, OSError) or any(c.__name__ in ("ClientConnectionError", "ClientPayloadError")
                                        for c in type(root).__mro__):
        return "connection"
    import openai

    return "timeout" if isinstance(exc, openai.APITimeoutError) else "connection"


@dataclass
class Outcome:
    """One request's result: content, or an error reason."""

    content: str = ""
    finish_reason: str = ""
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reason: str = ""  # empty on success
    retryable: bool = False
    retry_after: float | None = None
    fallback: bool = False  # the server rejected the response_format dialect; retry at once with the other


@dataclass
class JSONResult:
    """What :meth:`Transport.call_json` got: the parsed pair candidates and the response, or a reason."""

    items: list[Any] | None = None
    content: str = ""
    finish_reason: str = ""
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reason: str = ""  # failure reason when items is None

    def cache_value(self) -> dict[str, Any]:
        """The response as the cache stores it."""
        return {"content": self.content, "finish_reason": self.finish_reason, "model": self.model,
                "usage": {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}}


class Dialect:
    """The ``response_format`` in use: ``json_schema`` may fall back to ``json_object+schema`` once."""

    def __init__(self, name: str) -> None:
        self.name = name

    def response_format(self) -> dict[str, Any] | None:
        if self.name == "json_schema":
            return {"type": "json_schema", "json_schema": {"name": "qa_pairs", "schema": PAIRS_SCHEMA, "strict": True}}
        if self.name == "json_object+schema":  # llama-cpp-python, Anyscale
            return {"type": "json_object", "schema": PAIRS_SCHEMA}
        if self.name == "json_object":
            return {"type": "json_object"}
        return None

    def rejected(self, sent: str, code: int, body: str) -> bool:
        """Whether an HTTP ``code`` error with ``body`` to a request sent in dialect ``sent`` calls for sending
        it again at once: the server rejected ``json_schema`` (the dialect switches now), or another
        request switched it meanwhile."""
        # llama-cpp-python answers type json_schema with a 500 validation error, others with 400/422
        if (code in (400, 422, 500) and sent == "json_schema" and self.name == "json_schema"
                and "response_format" in body and "json_schema" in body):
            self.name = "json_object+schema"
            log.warning("the endpoint rejected response_format json_schema; sending "
                        "{'type': 'json_object', 'schema': ...} instead")
            return True
        return code in (400, 422, 500) and sent != self.name  # sent before another task switched dialect


class Breaker:
    """Trips (sets :attr:`event`) when requests have failed for ``seconds`` with no success in between.

    Time between batches (outside ``extract()``) is not failing time.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.failing_since: float | None = None
        self.idle_since: float | None = None
        self.last_error = ""
        self.event: asyncio.Event | None = None

    def resume(self) -> None:
        """A batch starts: the idle time since the last one does not count."""
        now = time.monotonic()
        if self.failing_since is not None and self.idle_since is not None:
            self.failing_since += now - self.idle_since

    def arm(self) -> asyncio.Event:
        """A fresh trip event for the batch starting now (made on the loop)."""
        self.event = asyncio.Event()
        return self.event

    def idle(self) -> None:
        self.idle_since = time.monotonic()

    @property
    def tripped(self) -> bool:
        return self.event is not None and self.event.is_set()

    def success(self) -> None:
        self.failing_since = None

    def reset(self) -> None:
        """After a trip: a later batch gets a fresh window."""
        self.failing_since = None

    def failure(self, reason: str) -> None:
        self.last_error = reason
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = now
        elif now - self.failing_since >= self.seconds and self.event is not None:
            log.error("no successful request for %.0fs (last error: %s): stopping", now - self.failing_since, reason)
            self.event.set()


@dataclass
class RequestCounts:
    """Request counters (see ``OpenAIExtractor.stats``)."""

    calls: int = 0
    retries: int = 0
    errors: Counter = field(default_factory=Counter)
    truncated_completions: int = 0
    refine_calls: int = 0
    response_format_rejections: int = 0
    rate_limit_wait_seconds: float = 0.0  # bucket waits (the Retry-After pause is added in stats())
    backoff_seconds: float = 0.0


class Transport:
    """Requests to the endpoint of ``llm`` (an ``LLMConfig``); tokens are counted in ``spend``."""

    def __init__(self, llm: Any, spend: Spend) -> None:
        self.llm = llm
        self.spend = spend
        self.counts = RequestCounts()
        self.dialect = Dialect(llm.response_format)
        self.rpm = Bucket(llm.requests_per_minute) if llm.requests_per_minute else None
        self.tpm = Bucket(llm.tokens_per_minute) if llm.tokens_per_minute else None
        self.pause = Pause()
        self.breaker = Breaker(llm.circuit_breaker_seconds)
        self.client: Any = None
        self.sem: asyncio.Semaphore | None = None

    def stats(self) -> dict[str, Any]:
        out = counters(self.counts)
        out["rate_limit_wait_seconds"] = round(self.counts.rate_limit_wait_seconds + self.pause.waited, 3)
        out["response_format"] = self.dialect.name
        return out

    # ------------------------------------------------------------- lifecycle (on the loop)
    def start_batch(self) -> asyncio.Event:
        """Ready for a batch (client and semaphore made on first use); returns the batch's trip event."""
        self.breaker.resume()
        if self.client is None:
            self.client = self.make_client()
        if self.sem is None:
            self.sem = asyncio.Semaphore(self.llm.concurrency)
        return self.breaker.arm()

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.close()

    def secret(self) -> str:
        return os.environ.get(self.llm.api_key_env, "") if self.llm.api_key_env else ""

    def redact(self, text: str) -> str:
        secret = self.secret()
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
        return text

    def make_client(self) -> Any:
        """The AsyncOpenAI client; on aiohttp's transport where aiohttp is installed (measured: 1.0 instead
        of 1.7 ms of client CPU per request, which decides throughput at high concurrency)."""
        import openai

        kwargs: dict[str, Any] = {}
        if USE_AIOHTTP and importlib.util.find_spec("aiohttp") is not None and hasattr(openai, "DefaultAioHttpClient"):
            try:
                kwargs["http_client"] = openai.DefaultAioHttpClient(timeout=self.llm.timeout)
            except Exception as e:  # noqa: BLE001 - the default httpx transport does the same job
                log.debug("aiohttp transport unavailable (%s); using httpx", type(e).__name__)
        return openai.AsyncOpenAI(api_key=self.secret() or "EMPTY", base_url=self.llm.base_url,
                                  max_retries=0, timeout=self.llm.timeout, **kwargs)

    # ------------------------------------------------------------- requests
    async def call_json(self, prompt: str, est_tokens: int, kind: str, doc_stats: Counter,
                        doc_id: str) -> JSONResult:
        """Request until the content parses or attempts run out."""
        attempts = content_failures = 0
        reason = ""
        attempts_key = "attempts" if kind == "extract" else "refine_attempts"
        while attempts < self.llm.max_attempts:
            attempts += 1
            doc_stats[attempts_key] += 1
            if attempts > 1:
                self.counts.retries += 1
            out = await self.request(prompt, est_tokens, kind, doc_stats)
            if out.fallback:
                self.counts.response_format_rejections += 1
                attempts -= 1  # the dialect switch costs no attempt (it happens once per extractor)
                doc_stats[attempts_key] -= 1
                continue
            if out.reason:
                reason = out.reason
                self.counts.errors[reason] += 1
                if not out.retryable:
                    break
                if attempts < self.llm.max_attempts:
                    delay = self.delay(attempts, out.retry_after)
                    log.debug("document %s: %s (%s attempt %d); retrying in %.2fs",
                              doc_id, reason, kind, attempts, delay)
                    await asyncio.sleep(delay)
                continue
            if not out.content.strip():
                reason = "empty_content"
                items = None
            else:
                items = parse_pairs(out.content)
                reason = "" if items is not None else "invalid_json"
            if items is not None:
                return JSONResult(items=items, content=out.content, finish_reason=out.finish_reason,
                                  model=out.model, prompt_tokens=out.prompt_tokens,
                                  completion_tokens=out.completion_tokens)
            self.counts.errors[reason] += 1
            content_failures += 1
            if content_failures >= CONTENT_ATTEMPTS:
                break
            log.debug("document %s: %s (%s attempt %d); retrying", doc_id, reason, kind, attempts)
        return JSONResult(reason=reason or "unknown")

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before attempt ``attempt + 1``: Retry-After (at most the breaker window), else backoff."""
        if retry_after is not None:
            delay = min(retry_after, max(self.llm.circuit_breaker_seconds, 0.0))
        else:
            d = min(self.llm.backoff_max, self.llm.backoff_base * 2 ** (attempt - 1))
            delay = random.uniform(d / 2, d)
        self.counts.backoff_seconds += delay
        return delay

    async def request(self, prompt: str, est_tokens: int, kind: str, doc_stats: Counter) -> Outcome:
        """Send one request (paced, capped) and classify what came back."""
        import openai
        from openai.types.chat import ChatCompletion

        assert self.sem is not None
        prefix = "" if kind == "extract" else "refine_"
        await self.pause.wait()
        async with self.sem:
            if self.rpm is not None:
                self.counts.rate_limit_wait_seconds += await self.rpm.acquire(1)
            if self.tpm is not None:
                self.counts.rate_limit_wait_seconds += await self.tpm.acquire(est_tokens)
            await self.pause.wait()
            self.spend.check()  # checked last, right before sending: responses that arrived meanwhile count
            body: dict[str, Any] = {
                "model": self.llm.model, "messages": [{"role": "user", "content": prompt}],
                "temperature": self.llm.temperature, "max_tokens": self.llm.max_tokens,
            }
            rf = self.dialect.response_format()
            if rf is not None:
                body["response_format"] = rf
            body.update(self.llm.extra_body)  # passed through unchanged, as extra_body would be
            dialect = self.dialect.name
            if kind == "extract":
                self.counts.calls += 1
            else:
                self.counts.refine_calls += 1
            doc_stats[f"{prefix}calls"] += 1
            try:
                async with asyncio.timeout(self.llm.timeout + 1.0):
                    # The client's documented request method for a body sent as is: the same POST that
                    # chat.completions.create() makes, without re-walking the JSON schema for every request.
                    resp = await self.client.post("/chat/completions", body=body, cast_to=ChatCompletion)
            except TimeoutError:
                return self._failed("timeout", True)
            except asyncio.CancelledError:
                # stopped in flight (the breaker tripped, or the run was interrupted): the request was sent and
                # counted in `calls`, so it is counted here too and every call has an outcome
                self.counts.errors["cancelled"] += 1
                raise
            except openai.APIConnectionError as e:  # APITimeoutError included
                return self._failed(transport_reason(e), True)
            except openai.APIStatusError as e:
                code = int(e.status_code)
                text = self.redact(str(e.body if e.body is not None else e.message))
                if self.dialect.rejected(dialect, code, text):
                    return Outcome(fallback=True)
                retryable = code in _RETRYABLE_STATUS or code >= 500
                wait = retry_after(getattr(e.response, "headers", None))
                if wait is not None and (code == 429 or code == 503):
                    self.pause.extend(wait)
                if not retryable:
                    log.warning("HTTP %d from the endpoint: %s", code, text[:300])
                return self._failed(f"http_{code}", retryable, wait)
            except openai.APIError as e:  # e.g. a body that is not a chat completion
                log.debug("bad response: %s", type(e).__name__)
                return self._failed("bad_response", True)
        # a response arrived: the endpoint is up
        self.breaker.success()
        return self._outcome(resp, kind, est_tokens, prefix, doc_stats)

    def _outcome(self, resp: Any, kind: str, est_tokens: int, prefix: str, doc_stats: Counter) -> Outcome:
        choices = getattr(resp, "choices", None)
        if not isinstance(choices, list):
            return Outcome(content="", reason="")  # counted as empty content by the caller
        choice = choices[0] if choices else None
        message = getattr(choice, "message", None)
        content = getattr(message, "content", None) or ""
        finish = str(getattr(choice, "finish_reason", "") or "")
        if finish == "length":
            self.counts.truncated_completions += 1
        usage = getattr(resp, "usage", None)
        pt, ct = self.spend.record(kind, usage)
        doc_stats[f"{prefix}prompt_tokens"] += pt
        doc_stats[f"{prefix}completion_tokens"] += ct
        if self.tpm is not None and usage is not None:
            self.tpm.credit(est_tokens - (pt + ct))
        return Outcome(content=content if isinstance(content, str) else str(content), finish_reason=finish,
                       model=str(getattr(resp, "model", "") or ""), prompt_tokens=pt, completion_tokens=ct)

    def _failed(self, reason: str, retryable: bool, retry_after: float | None = None) -> Outcome:
        self.breaker.failure(reason)
        return Outcome(reason=reason, retryable=retryable, retry_after=retry_after)
