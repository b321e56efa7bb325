"""The ``openai`` extractor: QA pairs from any OpenAI-compatible chat-completions endpoint.

vLLM, SGLang, Ollama, the llama.cpp servers and OpenAI itself all speak this
protocol. :class:`OpenAIExtractor` keeps a private asyncio loop in a daemon
thread and one ``openai.AsyncOpenAI`` client on it; ``extract()`` is
synchronous and sends all documents of a batch concurrently, at most
``llm.concurrency`` requests in flight.

Per document:

1. The text is cut to ``llm.max_doc_tokens`` (counted with ``llm.tokenizer``
   when given, else as characters / 4) and put into the prompt template
   (``prompts/extract.txt`` or ``llm.prompt_file``; ``{document}`` and
   ``{max_pairs}`` are replaced) which is sent as one user message.
2. The cache (:mod:`equal.extract.cache`) is asked first; a hit costs no request.
3. Otherwise the request is sent (``client.post("/chat/completions", ...)``, the
   same POST as ``chat.completions.create``, with ``response_format``
   ``json_schema``, ``json_object`` or none per ``llm.response_format``; a server
   that rejects ``json_schema`` by naming it, like llama-cpp-python, gets
   ``{"type": "json_object", "schema": ...}`` from then on), with the client's own
   retries turned off:
   429, 408, 409, 5xx, timeouts and connection errors are retried up to
   ``llm.max_attempts`` attempts with exponential backoff and jitter, honouring
   ``Retry-After`` (which also pauses every other request). A 200 whose content
   is empty or holds no JSON is retried once. What still fails is returned as
   ``Extraction(status="failed", reason=...)`` and is not cached.
4. The content is parsed leniently (code fences, ``<think>`` blocks, text
   around the JSON, an object wrapping the list, a list cut off by the token
   limit) and each pair is validated; every rejection is counted by reason.
5. With ``llm.refine`` a second request shows the pairs with their document
   and asks for the corrected list.

Requests that fail at the transport or HTTP level for ``llm.circuit_breaker_seconds``
with no success in between make ``extract()`` raise
:class:`~equal.extract.base.EndpointDown` once in-flight work is cancelled.
Everything that succeeded before is in the cache, so running again resumes.
The exception carries ``results`` (the finished Extractions of the batch,
``None`` for the rest).

Hard spend caps (``llm.max_tokens_total``, ``llm.max_cost``) are checked before every request is sent,
against the tokens the responses' ``usage`` reported (plus ``spend_base``, what earlier processes of the
run spent): once one is reached no further request is sent, the requests in flight finish (and are
cached), and ``extract()`` raises :class:`~equal.extract.base.SpendCapReached` with the batch's finished
results, like the circuit breaker.

Client-side rate caps (``requests_per_minute``, ``tokens_per_minute``) are token
buckets refilled continuously, allowing bursts of one second's worth; a token
request is charged its prompt estimate plus ``max_tokens`` and corrected to the
``usage`` the server reports.

The API key is read from the environment variable named by ``llm.api_key_env``
(``"EMPTY"`` when unset: local servers need none) and is never logged,
printed or put in an exception.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import hashlib
import importlib.util
import json
import logging
import os
import random
import re
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..config import ConfigError, ExtractConfig
from ..types import Document, Extraction, QAPair
from .base import EndpointDown, SpendCapReached, cut_text
from .cache import ExtractionCache, cache_key, cache_path

log = logging.getLogger(__name__)

#: Bumped when parsing or the cached value's layout changes in a way that changes results.
FORMAT_VERSION = 1
#: A 200 response with empty or unparsable content is tried at most this many times per document.
CONTENT_ATTEMPTS = 2
#: Characters per token when no tokenizer is configured.
CHARS_PER_TOKEN = 4
#: Send requests through aiohttp (openai.DefaultAioHttpClient) where it is installed; else httpx.
USE_AIOHTTP = True

PAIRS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "pairs": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
                "required": ["question", "answer"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["pairs"],
    "additionalProperties": False,
}

_RETRYABLE_STATUS = {408, 409, 425, 429}
_PLACEHOLDER = re.compile(r"\{(document|max_pairs|pairs)\}")
_FENCE = re.compile(r"```[ \t]*(?:json|JSON|javascript)?[ \t]*\n?(.*?)(?:```|$)", re.S)
_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.S | re.I)
_Q_KEYS = ("question", "q", "instruction", "prompt", "query")
_A_KEYS = ("answer", "a", "output", "response", "solution")
_LIST_KEYS = ("pairs", "qa_pairs", "qa", "questions", "items", "data", "results", "output")


# --------------------------------------------------------------------------- prompts
def read_prompt(path: str | os.PathLike | None, shipped: str) -> str:
    """The template at ``path``, else the shipped ``prompts/<shipped>``."""
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise ConfigError(f"prompt file not found: {p}")
        return p.read_text(encoding="utf-8")
    return resources.files("equal.extract").joinpath("prompts", shipped).read_text(encoding="utf-8")


def render(template: str, **values: str) -> str:
    """Replace ``{document}``, ``{max_pairs}`` and ``{pairs}`` in one pass (other braces stay)."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- parsing
_MISSING = object()


def _loads_lenient(text: str) -> Any:
    """The first JSON list or object in ``text`` (whole text first, then from each ``[``/``{``)."""
    text = text.strip()
    if not text:
        return _MISSING
    try:
        return json.loads(text)
    except ValueError:
        pass
    decoder = json.JSONDecoder()
    starts = [m.start() for m in re.finditer(r"[\[{]", text)][:64]
    for i in starts:
        try:
            value, _ = decoder.raw_decode(text, i)
        except ValueError:
            continue
        if isinstance(value, (list, dict)) and _unwrap(value) is not None:
            return value
    return _MISSING


def _has_key(d: dict, keys: tuple[str, ...]) -> bool:
    low = {str(k).lower() for k in d}
    return any(k in low for k in keys)


def _unwrap(value: Any, depth: int = 0) -> list[Any] | None:
    """The list of pair candidates inside a parsed JSON value."""
    if isinstance(value, list):
        return value
    if not isinstance(value, dict) or depth > 2:
        return None
    if _has_key(value, _Q_KEYS) and _has_key(value, _A_KEYS):
        return [value]
    lowered = {str(k).lower(): v for k, v in value.items()}
    for k in _LIST_KEYS:
        if isinstance(lowered.get(k), list):
            return lowered[k]
    for v in value.values():
        if isinstance(v, list):
            return v
    for v in value.values():
        if isinstance(v, dict):
            inner = _unwrap(v, depth + 1)
            if inner is not None:
                return inner
    return None


def _salvage(text: str) -> list[dict] | None:
    """Complete pair objects from a list that was cut off (e.g. by the token limit)."""
    if '"question"' not in text.lower():
        return None
    decoder = json.JSONDecoder()
    found: list[dict] = []
    i = text.find("{")
    while i != -1:
        try:
            obj, end = decoder.raw_decode(text, i)
        except ValueError:
            i = text.find("{", i + 1)
            continue
        if isinstance(obj, dict) and _has_key(obj, _Q_KEYS) and _has_key(obj, _A_KEYS):
            found.append(obj)
            i = text.find("{", end)
        else:
            i = text.find("{", i + 1)
    return found or None


def parse_pairs(content: str) -> list[Any] | None:
    """The pair candidates in a response's content, or ``None`` when it holds no usable JSON.

    ``[]`` (a valid, empty answer) is different from ``None`` (invalid JSON).
    """
    text = _THINK.sub("", content or "").strip()
    if not text:
        return None
    candidates = [m.group(1) for m in _FENCE.finditer(text) if m.group(1).strip()] + [text]
    for cand in candidates:
        value = _loads_lenient(cand)
        if value is _MISSING:
            continue
        items = _unwrap(value)
        if items is not None:
            try:
                json.loads(cand)
            except ValueError:  # found inside other text: maybe one object of a list that was cut off
                salvaged = _salvage(cand) or []
                if len(salvaged) > len(items):
                    return salvaged
            return items
    return _salvage(text)


def _field(item: dict, keys: tuple[str, ...]) -> Any:
    lowered = {str(k).lower(): v for k, v in item.items()}
    for k in keys:
        if k in lowered:
            return lowered[k]
    return None


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


@dataclass
class Validated:
    pairs: list[tuple[str, str]]
    rejections: Counter = field(default_factory=Counter)
    answers_truncated: int = 0


def validate_pairs(items: list[Any], document: str, cfg: ExtractConfig) -> Validated:
    """Keep well-formed, non-duplicate pairs within the length bounds, at most ``max_pairs_per_doc``."""
    out = Validated(pairs=[])
    ndoc = _norm(document)
    seen: set[str] = set()
    for item in items:
        if not isinstance(item, dict):
            out.rejections["not_an_object"] += 1
            continue
        q, a = _field(item, _Q_KEYS), _field(item, _A_KEYS)
        if q is None or a is None:
            out.rejections["missing_field"] += 1
            continue
        if isinstance(a, (int, float)) and not isinstance(a, bool):
            a = str(a)
        if not isinstance(q, str) or not isinstance(a, str):
            out.rejections["not_a_string"] += 1
            continue
        q, a = q.strip(), a.strip()
        if not q:
            out.rejections["empty_question"] += 1
            continue
        if not a:
            out.rejections["empty_answer"] += 1
            continue
        if len(q) < cfg.min_question_chars:
            out.rejections["question_too_short"] += 1
            continue
        if len(a) < cfg.min_answer_chars:
            out.rejections["answer_too_short"] += 1
            continue
        nq = _norm(q)
        if ndoc and (ndoc in nq or (len(nq) >= 0.8 * len(ndoc) and nq in ndoc)):
            out.rejections["question_is_document"] += 1
            continue
        if nq in seen:
            out.rejections["duplicate"] += 1
            continue
        if len(out.pairs) >= cfg.max_pairs_per_doc:
            out.rejections["over_max_pairs"] += 1
            continue
        if len(a) > cfg.max_answer_chars:
            a = cut_text(a, cfg.max_answer_chars)
            out.answers_truncated += 1
        seen.add(nq)
        out.pairs.append((q, a))
    return out


# --------------------------------------------------------------------------- helpers
def _redact_url(url: str) -> str:
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


def _retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000.0)
        value = headers.get("retry-after")
    except (AttributeError, TypeError, ValueError):
        return None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _transport_reason(exc: BaseException) -> str:
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


class _Bucket:
    """Token bucket: ``per_minute / 60`` units per second, bursts up to one second's worth.

    A request larger than the burst waits for a full bucket and leaves it in
    debt, so the long-run rate holds for any request size.
    """

    def __init__(self, per_minute: float) -> None:
        self.rate = float(per_minute) / 60.0
        self.capacity = max(1.0, self.rate)
        self.level = self.capacity
        self.stamp = time.monotonic()
        self._lock: asyncio.Lock | None = None

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    async def acquire(self, amount: float) -> float:
        """Take ``amount``; returns the seconds waited."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        waited = 0.0
        async with self._lock:
            need = min(amount, self.capacity)
            while True:
                self._refill()
                if self.level >= need - 1e-9:
                    self.level -= amount
                    return waited
                delay = (need - self.level) / self.rate
                waited += delay
                await asyncio.sleep(delay)

    def credit(self, amount: float) -> None:
        """Give back (positive) or charge (negative) ``amount`` after the fact."""
        self._refill()
        self.level = min(self.capacity, self.level + amount)


@dataclass
class _Prepared:
    doc: Document
    text: str  # the document text sent (after truncation)
    prompt: str
    key: str
    est_tokens: int
    truncated: bool


class _CapStop(Exception):
    """Raised inside a document's task when a spend cap forbids its next request."""


def spend_cost(prompt_tokens: int, completion_tokens: int, llm: Any) -> float | None:
    """The cost of the tokens at the configured prices (None when no price is set)."""
    pp, pc = llm.price_prompt_per_mtok, llm.price_completion_per_mtok
    if pp is None and pc is None:
        return None
    return prompt_tokens * (pp or 0.0) / 1e6 + completion_tokens * (pc or 0.0) / 1e6


@dataclass
class _Outcome:
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
class _JSONResult:
    items: list[Any] | None = None
    content: str = ""
    finish_reason: str = ""
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reason: str = ""  # failure reason when items is None


# --------------------------------------------------------------------------- extractor
class OpenAIExtractor:
    """QA extraction with an OpenAI-compatible endpoint; see the module docstring."""

    name = "openai"

    def __init__(self, cfg: ExtractConfig) -> None:
        self.cfg = cfg
        self.llm = cfg.llm
        if self.llm.concurrency < 1:
            raise ConfigError("extract.llm.concurrency must be >= 1")
        if self.llm.max_attempts < 1:
            raise ConfigError("extract.llm.max_attempts must be >= 1")
        self._template = read_prompt(self.llm.prompt_file, "extract.txt")
        if "{document}" not in self._template:
            raise ConfigError(f"prompt template {self.llm.prompt_file or 'extract.txt'} has no {{document}} placeholder")
        self._refine_template = read_prompt(self.llm.refine_prompt_file, "refine.txt")
        if self.llm.refine and not ("{document}" in self._refine_template and "{pairs}" in self._refine_template):
            raise ConfigError("the refine prompt template needs both {document} and {pairs} placeholders")
        self._tokenizer: Any = None
        self._tokenizer_loaded = False
        self._cache: ExtractionCache | None = None
        if cfg.cache:
            path = cache_path(cfg.cache_dir)
            try:
                self._cache = ExtractionCache(path)
            except (OSError, sqlite3.Error) as e:
                raise ConfigError(f"cannot open the extraction cache {path}: {e} "
                                  "(set extract.cache_dir, or turn the cache off with --no-cache)") from None
        self._counts: Counter = Counter()
        self._failures: Counter = Counter()
        self._errors: Counter = Counter()
        self._rejections: Counter = Counter()
        self._refine_failures: Counter = Counter()
        self._wall = 0.0
        self._dialect = self.llm.response_format  # json_schema may fall back to "json_object+schema"
        self._rpm = _Bucket(self.llm.requests_per_minute) if self.llm.requests_per_minute else None
        self._tpm = _Bucket(self.llm.tokens_per_minute) if self.llm.tokens_per_minute else None
        self._not_before = 0.0  # monotonic time before which no request is sent (Retry-After)
        self._failing_since: float | None = None
        self._idle_since: float | None = None
        self._last_error = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self._sem: asyncio.Semaphore | None = None
        self._trip: asyncio.Event | None = None
        self._closed = False
        #: (prompt, completion) tokens spent before this extractor (earlier processes of the run), for the caps
        self.spend_base: tuple[int, int] = (0, 0)
        self._cap_reached: str | None = None
        self._start_lock = threading.Lock()
        self._extract_lock = threading.Lock()  # one batch at a time (callers in several threads queue up)

    # ------------------------------------------------------------- protocol
    def __repr__(self) -> str:
        return f"OpenAIExtractor(model={self.llm.model!r}, base_url={_redact_url(self.llm.base_url)!r})"

    def fingerprint(self) -> dict[str, Any]:
        fp: dict[str, Any] = {
            "name": self.name, "version": FORMAT_VERSION, "model": self.llm.model,
            "prompt_sha256": _sha256(self._template), "temperature": self.llm.temperature,
            "max_tokens": self.llm.max_tokens, "response_format": self.llm.response_format,
            "extra_body": self.llm.extra_body, "max_doc_tokens": self.llm.max_doc_tokens,
            "tokenizer": self.llm.tokenizer, "refine": self.llm.refine,
            "max_pairs_per_doc": self.cfg.max_pairs_per_doc, "min_question_chars": self.cfg.min_question_chars,
            "min_answer_chars": self.cfg.min_answer_chars, "max_answer_chars": self.cfg.max_answer_chars,
        }
        if self.llm.refine:
            fp["refine_prompt_sha256"] = _sha256(self._refine_template)
        return fp

    def stats(self) -> dict[str, Any]:
        """Accounting since the extractor was made.

        Documents: ``docs`` (given to extract), ``docs_ok`` / ``docs_empty`` (valid answer, no pair kept) /
        ``docs_failed`` / ``docs_aborted`` (unfinished when the circuit breaker stopped a batch), ``pairs``,
        ``cache_hits``, ``cache_errors`` (cache reads/writes that failed; the run goes on), ``duplicate_docs`` (same text twice in a batch: one request), ``truncated_docs``.
        Requests: ``calls`` (extraction requests sent, every attempt), ``retries`` (attempts after a
        document's first), ``prompt_tokens`` / ``completion_tokens`` (sums of the responses' ``usage``),
        ``errors`` (failed attempts by reason), ``failures`` (failed documents by reason),
        ``truncated_completions`` (finish_reason ``length``), ``missing_usage``,
        ``response_format`` (the dialect in use) and ``response_format_rejections``.
        Validation: ``rejections`` (pairs dropped, by reason), ``answers_truncated``.
        Refinement: ``refine_calls``, ``refine_prompt_tokens``, ``refine_completion_tokens``,
        ``refine_cache_hits``, ``refine_dropped``, ``refine_failures``.
        Time: ``wall_seconds`` (inside extract()), ``backoff_seconds`` and ``rate_limit_wait_seconds``
        (summed over requests). ``estimated_cost`` when a price is set.
        """
        c = dict(self._counts)
        g = lambda k: c.get(k, 0)  # noqa: E731
        out: dict[str, Any] = {
            "docs": g("docs"), "docs_ok": g("docs_ok"), "docs_empty": g("docs_empty"),
            "docs_failed": g("docs_failed"), "docs_aborted": g("docs_aborted"), "pairs": g("pairs"),
            "calls": g("calls"), "retries": g("retries"),
            "prompt_tokens": g("prompt_tokens"), "completion_tokens": g("completion_tokens"),
            "cache_hits": g("cache_hits"), "cache_errors": g("cache_errors"), "duplicate_docs": g("duplicate_docs"),
            "failures": dict(self._failures), "errors": dict(self._errors), "rejections": dict(self._rejections),
            "truncated_docs": g("truncated_docs"), "truncated_completions": g("truncated_completions"),
            "answers_truncated": g("answers_truncated"), "missing_usage": g("missing_usage"),
            "refine_calls": g("refine_calls"), "refine_prompt_tokens": g("refine_prompt_tokens"),
            "refine_completion_tokens": g("refine_completion_tokens"), "refine_cache_hits": g("refine_cache_hits"),
            "refine_dropped": g("refine_dropped"), "refine_failures": dict(self._refine_failures),
            "response_format": self._dialect, "response_format_rejections": g("response_format_rejections"),
            "rate_limit_wait_seconds": round(c.get("rate_limit_wait_seconds", 0.0), 3),
            "backoff_seconds": round(c.get("backoff_seconds", 0.0), 3),
            "wall_seconds": round(self._wall, 3),
        }
        cost = spend_cost(g("prompt_tokens") + g("refine_prompt_tokens"),
                          g("completion_tokens") + g("refine_completion_tokens"), self.llm)
        if cost is not None:
            out["estimated_cost"] = cost
        return out

    def spend(self) -> tuple[int, int]:
        """(prompt, completion) tokens counted against the caps: ``spend_base`` plus every response so far."""
        c = self._counts
        return (self.spend_base[0] + c["prompt_tokens"] + c["refine_prompt_tokens"],
                self.spend_base[1] + c["completion_tokens"] + c["refine_completion_tokens"])

    def _over_cap(self) -> str | None:
        """Which cap the spend has reached (a sentence), or None."""
        cap_tokens, cap_cost = self.llm.max_tokens_total, self.llm.max_cost
        if cap_tokens is None and cap_cost is None:
            return None
        p, c = self.spend()
        if cap_tokens is not None and p + c >= cap_tokens:
            return f"extract.llm.max_tokens_total={cap_tokens} reached ({p + c} tokens spent: {p} prompt, {c} completion)"
        cost = spend_cost(p, c, self.llm)
        if cap_cost is not None and cost is not None and cost >= cap_cost:
            return f"extract.llm.max_cost={cap_cost:g} reached ({cost:.6g} spent on {p} prompt and {c} completion tokens)"
        return None

    def extract(self, docs: list[Document]) -> list[Extraction]:
        if self._closed:
            raise RuntimeError("extractor is closed")
        docs = list(docs)
        if not docs:
            return []
        with self._extract_lock:
            t0 = time.monotonic()
            loop = self._ensure_loop()
            # documents are cut, rendered and hashed here, so a tokenizer does not hold up the loop
            prepared = [self._prepare(d) if d.text.strip() else None for d in docs]
            fut = asyncio.run_coroutine_threadsafe(self._extract_all(docs, prepared), loop)
            try:
                return fut.result()
            except BaseException:
                if not fut.done():  # interrupted here (Ctrl-C): stop the batch's requests too
                    fut.cancel()
                    concurrent.futures.wait([fut], timeout=30)
                raise
            finally:
                self._wall += time.monotonic() - t0

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            if self._client is not None:
                try:
                    asyncio.run_coroutine_threadsafe(self._client.close(), loop).result(timeout=10)
                except Exception:  # noqa: BLE001 - closing is best effort
                    pass
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            if not thread.is_alive():
                loop.close()
        self._client = None
        self._loop = self._thread = None
        if self._cache is not None:
            self._cache.close()
            self._cache = None

    def __enter__(self) -> "OpenAIExtractor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------- loop
    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._start_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=run, name="equal-llm", daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def _secret(self) -> str:
        return os.environ.get(self.llm.api_key_env, "") if self.llm.api_key_env else ""

    def _redact(self, text: str) -> str:
        secret = self._secret()
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
        return text

    def _make_client(self) -> Any:
        """The AsyncOpenAI client; on aiohttp's transport where aiohttp is installed (measured: 1.0 instead
        of 1.7 ms of client CPU per request, which decides throughput at high concurrency)."""
        import openai

        kwargs: dict[str, Any] = {}
        if USE_AIOHTTP and importlib.util.find_spec("aiohttp") is not None and hasattr(openai, "DefaultAioHttpClient"):
            try:
                kwargs["http_client"] = openai.DefaultAioHttpClient(timeout=self.llm.timeout)
            except Exception as e:  # noqa: BLE001 - the default httpx transport does the same job
                log.debug("aiohttp transport unavailable (%s); using httpx", type(e).__name__)
        return openai.AsyncOpenAI(api_key=self._secret() or "EMPTY", base_url=self.llm.base_url,
                                  max_retries=0, timeout=self.llm.timeout, **kwargs)

    # ------------------------------------------------------------- documents
    def _load_tokenizer(self) -> Any:
        if not self._tokenizer_loaded:
            self._tokenizer_loaded = True
            if self.llm.tokenizer:
                try:
                    from transformers import AutoTokenizer

                    self._tokenizer = AutoTokenizer.from_pretrained(self.llm.tokenizer)
                except Exception as e:  # noqa: BLE001
                    raise ConfigError(f"cannot load tokenizer {self.llm.tokenizer!r}: {type(e).__name__}: {e}") from None
        return self._tokenizer

    def count_tokens(self, text: str) -> int:
        tok = self._load_tokenizer()
        if tok is None:
            return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN
        return len(tok(text, add_special_tokens=False)["input_ids"])

    def truncate(self, text: str) -> tuple[str, bool]:
        """``text`` cut to ``max_doc_tokens`` tokens, and whether it was cut."""
        limit = self.llm.max_doc_tokens
        tok = self._load_tokenizer()
        if tok is None:
            max_chars = limit * CHARS_PER_TOKEN
            if len(text) <= max_chars:
                return text, False
            head = text[:max_chars]
            i = max(head.rfind(" "), head.rfind("\n"))
            return (head[:i] if i > max_chars * 0.9 else head).rstrip(), True
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=bool(getattr(tok, "is_fast", False)))
        ids = enc["input_ids"]
        if len(ids) <= limit:
            return text, False
        offsets = enc.get("offset_mapping")
        if offsets:
            return text[: offsets[limit - 1][1]].rstrip(), True
        return tok.decode(ids[:limit]).rstrip(), True

    def _prepare(self, doc: Document) -> _Prepared:
        text, truncated = self.truncate(doc.text)
        prompt = render(self._template, document=text, max_pairs=str(self.cfg.max_pairs_per_doc))
        key = cache_key(v=FORMAT_VERSION, kind="extract", model=self.llm.model, template=self._template,
                        document=text, max_pairs=self.cfg.max_pairs_per_doc, **self._params())
        est = self.count_tokens(prompt) + self.llm.max_tokens
        return _Prepared(doc=doc, text=text, prompt=prompt, key=key, est_tokens=est, truncated=truncated)

    def _params(self) -> dict[str, Any]:
        return {"temperature": self.llm.temperature, "max_tokens": self.llm.max_tokens,
                "response_format": self.llm.response_format, "extra_body": self.llm.extra_body}

    # ------------------------------------------------------------- batch
    async def _extract_all(self, docs: list[Document], prep: list[_Prepared | None]) -> list[Extraction]:
        now = time.monotonic()
        if self._failing_since is not None and self._idle_since is not None:
            self._failing_since += now - self._idle_since  # time outside extract() is not failing time
        if self._client is None:
            self._client = self._make_client()
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.llm.concurrency)
        self._trip = asyncio.Event()
        self._cap_reached = None
        results: list[Extraction | None] = [None] * len(docs)
        groups: dict[str, list[int]] = {}
        prepared: dict[str, _Prepared] = {}
        try:
            for i, p in enumerate(prep):
                self._counts["docs"] += 1
                if p is None:
                    results[i] = self._finish(Extraction(pairs=[], status="empty", reason="empty_document"))
                    continue
                if p.truncated:
                    self._counts["truncated_docs"] += 1
                if p.key in groups:
                    self._counts["duplicate_docs"] += 1
                else:
                    prepared[p.key] = p
                groups.setdefault(p.key, []).append(i)
            tasks = {asyncio.ensure_future(self._run_doc(prepared[key])): idx for key, idx in groups.items()}
            trip_wait = asyncio.ensure_future(self._trip.wait())
            pending: set[asyncio.Future] = set(tasks) | {trip_wait}
            try:
                while len(pending) > 1 or trip_wait not in pending:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for t in done:
                        if t is trip_wait:
                            continue
                        try:
                            ext = t.result()
                        except _CapStop as e:  # the cap forbade this document's next request; others finish
                            self._cap_reached = str(e)
                            continue
                        for j, i in enumerate(tasks[t]):
                            results[i] = self._finish(ext if j == 0 else Extraction(
                                pairs=[QAPair(question=p.question, answer=p.answer, doc_id=docs[i].id,
                                              extractor=self.name) for p in ext.pairs],
                                status=ext.status, reason=ext.reason, cached=ext.cached, stats=dict(ext.stats)))
                    if self._trip.is_set():
                        break
            finally:
                for t in pending:
                    t.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
            if self._cap_reached is not None and not self._trip.is_set():
                aborted = sum(r is None for r in results)
                self._counts["docs_aborted"] += aborted
                msg = (f"spend cap {self._cap_reached}; {len(docs) - aborted} of {len(docs)} documents of this "
                       "batch finished and are cached")
                key = self._cap_reached.partition("=")[0]
                self._cap_reached = None
                raise SpendCapReached(msg, results=results, usage=self.spend(), key=key)
            if self._trip.is_set():
                aborted = sum(r is None for r in results)
                self._counts["docs_aborted"] += aborted
                finished = len(docs) - aborted
                self._failing_since = None  # a later call gets a fresh window
                err = EndpointDown(
                    f"the LLM endpoint {_redact_url(self.llm.base_url)} has had no successful request for "
                    f"{self.llm.circuit_breaker_seconds:g}s (last error: {self._last_error or 'unknown'}); "
                    f"{finished} of {len(docs)} documents of this batch finished and are cached. "
                    "Run the same command again to resume once the endpoint is back.")
                err.results = results  # type: ignore[attr-defined]
                raise err
            return [r for r in results if r is not None]
        finally:
            self._idle_since = time.monotonic()

    def _finish(self, ext: Extraction) -> Extraction:
        self._counts[f"docs_{ext.status}"] += 1
        self._counts["pairs"] += len(ext.pairs)
        return ext

    # ------------------------------------------------------------- one document
    async def _run_doc(self, p: _Prepared) -> Extraction:
        try:
            return await self._run_doc_inner(p)
        except (asyncio.CancelledError, _CapStop):
            raise
        except Exception as e:  # noqa: BLE001 - one document never takes the batch down
            log.error("document %s: unexpected error %s", p.doc.id, type(e).__name__)
            self._failures["internal_error"] += 1
            return Extraction(pairs=[], status="failed", reason="internal_error")

    async def _run_doc_inner(self, p: _Prepared) -> Extraction:
        doc_stats: Counter = Counter()
        doc_stats["truncated_doc"] = int(p.truncated)
        cached = False
        items: list[Any] | None = None
        hit = self._cache_get(p.key)
        if hit is not None:
            items = parse_pairs(str(hit.get("content", "")))
            if items is not None:
                cached = True
                self._counts["cache_hits"] += 1
        if items is None:
            res = await self._call_json(p.prompt, p.est_tokens, "extract", doc_stats, p.doc.id)
            if res.items is None:
                self._failures[res.reason] += 1
                log.warning("document %s: extraction failed after %d attempt(s): %s",
                            p.doc.id, doc_stats["attempts"], res.reason)
                return Extraction(pairs=[], status="failed", reason=res.reason, stats=dict(doc_stats))
            items = res.items
        v = validate_pairs(items, p.text, self.cfg)
        self._rejections.update(v.rejections)
        self._counts["answers_truncated"] += v.answers_truncated
        doc_stats["rejected"] = sum(v.rejections.values())
        if not cached:
            self._cache_put(p.key, {"content": res.content, "finish_reason": res.finish_reason, "model": res.model,
                                    "usage": {"prompt_tokens": res.prompt_tokens,
                                              "completion_tokens": res.completion_tokens},
                                    "pairs": [{"question": q, "answer": a} for q, a in v.pairs]})
        pairs = v.pairs
        if self.llm.refine and pairs:
            pairs = await self._refine(p, pairs, doc_stats)
        qa = [QAPair(question=q, answer=a, doc_id=p.doc.id, extractor=self.name) for q, a in pairs]
        return Extraction(pairs=qa, status="ok" if qa else "empty", reason="" if qa else "no_valid_pairs",
                          cached=cached, stats=dict(doc_stats))

    def _cache_get(self, key: str) -> dict[str, Any] | None:
        if self._cache is None:
            return None
        try:
            return self._cache.get(key)
        except sqlite3.Error as e:  # a cache that cannot be read is a miss, not a failure
            self._counts["cache_errors"] += 1
            log.warning("extraction cache read failed: %s", e)
            return None

    def _cache_put(self, key: str, value: dict[str, Any]) -> None:
        if self._cache is None:
            return
        try:
            self._cache.put(key, value)
        except (sqlite3.Error, OSError) as e:  # the extraction stands; it is only not cached
            self._counts["cache_errors"] += 1
            log.warning("extraction cache write failed: %s", e)

    async def _refine(self, p: _Prepared, pairs: list[tuple[str, str]], doc_stats: Counter) -> list[tuple[str, str]]:
        listing = json.dumps({"pairs": [{"question": q, "answer": a} for q, a in pairs]}, ensure_ascii=False, indent=1)
        key = cache_key(v=FORMAT_VERSION, kind="refine", model=self.llm.model, template=self._refine_template,
                        document=p.text, pairs=listing, **self._params())
        items: list[Any] | None = None
        hit = self._cache_get(key)
        if hit is not None:
            items = parse_pairs(str(hit.get("content", "")))
            if items is not None:
                self._counts["refine_cache_hits"] += 1
        if items is None:
            prompt = render(self._refine_template, document=p.text, pairs=listing,
                            max_pairs=str(self.cfg.max_pairs_per_doc))
            est = self.count_tokens(prompt) + self.llm.max_tokens
            res = await self._call_json(prompt, est, "refine", doc_stats, p.doc.id)
            if res.items is None:
                self._refine_failures[res.reason] += 1
                return pairs  # the unrefined pairs stand
            items = res.items
            self._cache_put(key, {"content": res.content, "finish_reason": res.finish_reason, "model": res.model,
                                  "usage": {"prompt_tokens": res.prompt_tokens,
                                            "completion_tokens": res.completion_tokens}})
        v = validate_pairs(items, p.text, self.cfg)
        self._rejections.update({f"refine_{k}": n for k, n in v.rejections.items()})
        self._counts["refine_dropped"] += max(0, len(pairs) - len(v.pairs))
        return v.pairs

    # ------------------------------------------------------------- requests
    async def _call_json(self, prompt: str, est_tokens: int, kind: str, doc_stats: Counter,
                         doc_id: str) -> _JSONResult:
        """Request until the content parses or attempts run out."""
        attempts = content_failures = 0
        reason = ""
        while attempts < self.llm.max_attempts:
            attempts += 1
            doc_stats["attempts" if kind == "extract" else "refine_attempts"] += 1
            if attempts > 1:
                self._counts["retries"] += 1
            out = await self._request(prompt, est_tokens, kind, doc_stats)
            if out.fallback:
                self._counts["response_format_rejections"] += 1
                attempts -= 1  # the dialect switch costs no attempt (it happens once per extractor)
                doc_stats["attempts" if kind == "extract" else "refine_attempts"] -= 1
                continue
            if out.reason:
                reason = out.reason
                self._errors[reason] += 1
                if not out.retryable:
                    break
                if attempts < self.llm.max_attempts:
                    delay = self._delay(attempts, out.retry_after)
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
                return _JSONResult(items=items, content=out.content, finish_reason=out.finish_reason,
                                   model=out.model, prompt_tokens=out.prompt_tokens,
                                   completion_tokens=out.completion_tokens)
            self._errors[reason] += 1
            content_failures += 1
            if content_failures >= CONTENT_ATTEMPTS:
                break
            log.debug("document %s: %s (%s attempt %d); retrying", doc_id, reason, kind, attempts)
        return _JSONResult(reason=reason or "unknown")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            delay = min(retry_after, max(self.llm.circuit_breaker_seconds, 0.0))
        else:
            d = min(self.llm.backoff_max, self.llm.backoff_base * 2 ** (attempt - 1))
            delay = random.uniform(d / 2, d)
        self._counts["backoff_seconds"] += delay
        return delay

    def _response_format(self) -> dict[str, Any] | None:
        if self._dialect == "json_schema":
            return {"type": "json_schema", "json_schema": {"name": "qa_pairs", "schema": PAIRS_SCHEMA, "strict": True}}
        if self._dialect == "json_object+schema":  # llama-cpp-python, Anyscale
            return {"type": "json_object", "schema": PAIRS_SCHEMA}
        if self._dialect == "json_object":
            return {"type": "json_object"}
        return None

    async def _wait_pause(self) -> None:
        while True:
            delay = self._not_before - time.monotonic()
            if delay <= 0:
                return
            self._counts["rate_limit_wait_seconds"] += delay
            await asyncio.sleep(delay)

    async def _request(self, prompt: str, est_tokens: int, kind: str, doc_stats: Counter) -> _Outcome:
        import openai
        from openai.types.chat import ChatCompletion

        assert self._sem is not None
        prefix = "" if kind == "extract" else "refine_"
        await self._wait_pause()
        async with self._sem:
            if self._rpm is not None:
                self._counts["rate_limit_wait_seconds"] += await self._rpm.acquire(1)
            if self._tpm is not None:
                self._counts["rate_limit_wait_seconds"] += await self._tpm.acquire(est_tokens)
            await self._wait_pause()
            cap = self._over_cap()
            if cap is not None:  # checked last, right before sending: responses that arrived meanwhile count
                raise _CapStop(cap)
            body: dict[str, Any] = {
                "model": self.llm.model, "messages": [{"role": "user", "content": prompt}],
                "temperature": self.llm.temperature, "max_tokens": self.llm.max_tokens,
            }
            rf = self._response_format()
            if rf is not None:
                body["response_format"] = rf
            body.update(self.llm.extra_body)  # passed through unchanged, as extra_body would be
            dialect = self._dialect
            self._counts[f"{prefix}calls"] += 1
            doc_stats[f"{prefix}calls"] += 1
            try:
                async with asyncio.timeout(self.llm.timeout + 1.0):
                    # The client's documented request method for a body sent as is: the same POST that
                    # chat.completions.create() makes, without re-walking the JSON schema for every request.
                    resp = await self._client.post("/chat/completions", body=body, cast_to=ChatCompletion)
            except TimeoutError:
                return self._failed("timeout", True)
            except asyncio.CancelledError:
                # stopped in flight (the breaker tripped, or the run was interrupted): the request was sent and
                # counted in `calls`, so it is counted here too and every call has an outcome
                self._errors["cancelled"] += 1
                raise
            except openai.APIConnectionError as e:  # APITimeoutError included
                return self._failed(_transport_reason(e), True)
            except openai.APIStatusError as e:
                code = int(e.status_code)
                body = self._redact(str(e.body if e.body is not None else e.message))
                # llama-cpp-python answers type json_schema with a 500 validation error, others with 400/422
                if (code in (400, 422, 500) and dialect == "json_schema" and self._dialect == "json_schema"
                        and "response_format" in body and "json_schema" in body):
                    self._dialect = "json_object+schema"
                    log.warning("the endpoint rejected response_format json_schema; sending "
                                "{'type': 'json_object', 'schema': ...} instead")
                    return _Outcome(fallback=True)
                if code in (400, 422, 500) and dialect != self._dialect:
                    return _Outcome(fallback=True)  # sent before another task switched dialect
                retryable = code in _RETRYABLE_STATUS or code >= 500
                retry_after = _retry_after(getattr(e.response, "headers", None))
                if retry_after is not None and (code == 429 or code == 503):
                    self._not_before = max(self._not_before, time.monotonic() + retry_after)
                if not retryable:
                    log.warning("HTTP %d from the endpoint: %s", code, body[:300])
                return self._failed(f"http_{code}", retryable, retry_after)
            except openai.APIError as e:  # e.g. a body that is not a chat completion
                log.debug("bad response: %s", type(e).__name__)
                return self._failed("bad_response", True)
        # a response arrived: the endpoint is up
        self._failing_since = None
        choices = getattr(resp, "choices", None)
        if not isinstance(choices, list):
            return _Outcome(content="", reason="")  # counted as empty content by the caller
        choice = choices[0] if choices else None
        message = getattr(choice, "message", None)
        content = getattr(message, "content", None) or ""
        finish = str(getattr(choice, "finish_reason", "") or "")
        if finish == "length":
            self._counts["truncated_completions"] += 1
        usage = getattr(resp, "usage", None)
        pt = int(getattr(usage, "prompt_tokens", 0) or 0)
        ct = int(getattr(usage, "completion_tokens", 0) or 0)
        if usage is None:
            self._counts["missing_usage"] += 1
        self._counts[f"{prefix}prompt_tokens"] += pt
        self._counts[f"{prefix}completion_tokens"] += ct
        doc_stats[f"{prefix}prompt_tokens"] += pt
        doc_stats[f"{prefix}completion_tokens"] += ct
        if self._tpm is not None and usage is not None:
            self._tpm.credit(est_tokens - (pt + ct))
        return _Outcome(content=content if isinstance(content, str) else str(content), finish_reason=finish,
                        model=str(getattr(resp, "model", "") or ""), prompt_tokens=pt, completion_tokens=ct)

    def _failed(self, reason: str, retryable: bool, retry_after: float | None = None) -> _Outcome:
        self._last_error = reason
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        elif now - self._failing_since >= self.llm.circuit_breaker_seconds and self._trip is not None:
            log.error("no successful request for %.0fs (last error: %s): stopping", now - self._failing_since, reason)
            self._trip.set()
        return _Outcome(reason=reason, retryable=retryable, retry_after=retry_after)
