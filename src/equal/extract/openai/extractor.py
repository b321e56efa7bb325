""":class:`OpenAIExtractor`: QA pairs from any OpenAI-compatible chat-completions endpoint.

vLLM, SGLang, Ollama, the llama.cpp servers and OpenAI itself all speak this protocol. The extractor
keeps a private asyncio loop in a daemon thread (:mod:`.loop`) and one ``openai.AsyncOpenAI`` client on
it (:mod:`.transport`); ``extract()`` is synchronous and sends all documents of a batch concurrently, at
most ``llm.concurrency`` requests in flight.

Per document:

1. The text is cut to ``llm.max_doc_tokens`` (counted with ``llm.tokenizer`` when given, else as
   characters / 4) and put into the prompt template (``prompts/extract.txt`` or ``llm.prompt_file``;
   ``{document}`` and ``{max_pairs}`` are replaced) which is sent as one user message (:mod:`.prompt`).
   Documents of one batch with the same text (the same cache key) are sent once.
2. The cache (:mod:`equal.extract.cache`) is asked first; a hit costs no request.
3. Otherwise the request is sent, retried, paced and capped by :class:`~.transport.Transport`. What still
   fails is returned as ``Extraction(status="failed", reason=...)`` and is not cached.
4. The content is parsed leniently and each pair is validated (:mod:`.parse`); every rejection is
   counted by reason.
5. With ``llm.refine`` a second request shows the pairs with their document and asks for the corrected list.

When the circuit breaker trips, ``extract()`` raises :class:`~equal.extract.base.EndpointDown` once
in-flight work is cancelled; when a spend cap is reached (:mod:`.spend`), the requests in flight finish
(and are cached) and it raises :class:`~equal.extract.base.SpendCapReached`. Both carry ``results`` (the
finished Extractions of the batch, ``None`` for the rest); everything that succeeded is in the cache, so
running again resumes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ...config import ConfigError, ExtractConfig
from ...types import Document, Extraction, QAPair
from ..base import EndpointDown, SpendCapReached
from ..cache import ExtractionCache, cache_key, cache_path
from .loop import LoopThread
from .parse import parse_pairs, validate_pairs
from .prompt import Tokens, read_prompt, render, sha256
from .spend import CapStop, Spend
from .stats import counters, merge
from .transport import Transport, redact_url

log = logging.getLogger(__name__)

#: Bumped when parsing or the cached value's layout changes in a way that changes results.
FORMAT_VERSION = 1


@dataclass
class Prepared:
    """One document ready to send."""

    doc: Document
    text: str  # the document text sent (after truncation)
    prompt: str
    key: str
    est_tokens: int
    truncated: bool


@dataclass
class DocumentCounts:
    """Document counters (see :meth:`OpenAIExtractor.stats`)."""

    docs: int = 0
    docs_ok: int = 0
    docs_empty: int = 0
    docs_failed: int = 0
    docs_aborted: int = 0
    pairs: int = 0
    cache_hits: int = 0
    cache_errors: int = 0
    duplicate_docs: int = 0
    failures: Counter = field(default_factory=Counter)
    rejections: Counter = field(default_factory=Counter)
    truncated_docs: int = 0
    answers_truncated: int = 0
    refine_cache_hits: int = 0
    refine_dropped: int = 0
    refine_failures: Counter = field(default_factory=Counter)
    wall_seconds: float = 0.0


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
        self.template = read_prompt(self.llm.prompt_file, "extract.txt")
        if "{document}" not in self.template:
            raise ConfigError(f"prompt template {self.llm.prompt_file or 'extract.txt'} has no {{document}} placeholder")
        self.refine_template = read_prompt(self.llm.refine_prompt_file, "refine.txt")
        if self.llm.refine and not ("{document}" in self.refine_template and "{pairs}" in self.refine_template):
            raise ConfigError("the refine prompt template needs both {document} and {pairs} placeholders")
        self.tokens = Tokens(self.llm.tokenizer)
        self._cache: ExtractionCache | None = None
        if cfg.cache:
            path = cache_path(cfg.cache_dir)
            try:
                self._cache = ExtractionCache(path)
            except (OSError, sqlite3.Error) as e:
                raise ConfigError(f"cannot open the extraction cache {path}: {e} "
                                  "(set extract.cache_dir, or turn the cache off with --no-cache)") from None
        self._counts = DocumentCounts()
        self._spend = Spend(self.llm)
        self._transport = Transport(self.llm, self._spend)
        self._loop = LoopThread("equal-llm")
        self._cap_reached: str | None = None
        self._closed = False
        self._extract_lock = threading.Lock()  # one batch at a time (callers in several threads queue up)

    # ------------------------------------------------------------- protocol
    def __repr__(self) -> str:
        return f"OpenAIExtractor(model={self.llm.model!r}, base_url={redact_url(self.llm.base_url)!r})"

    def fingerprint(self) -> dict[str, Any]:
        fp: dict[str, Any] = {
            "name": self.name, "version": FORMAT_VERSION, "model": self.llm.model,
            "prompt_sha256": sha256(self.template), "temperature": self.llm.temperature,
            "max_tokens": self.llm.max_tokens, "response_format": self.llm.response_format,
            "extra_body": self.llm.extra_body, "max_doc_tokens": self.llm.max_doc_tokens,
            "tokenizer": self.llm.tokenizer, "refine": self.llm.refine,
            "max_pairs_per_doc": self.cfg.max_pairs_per_doc, "min_question_chars": self.cfg.min_question_chars,
            "min_answer_chars": self.cfg.min_answer_chars, "max_answer_chars": self.cfg.max_answer_chars,
        }
        if self.llm.refine:
            fp["refine_prompt_sha256"] = sha256(self.refine_template)
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
        out = merge(counters(self._counts), self._transport.stats(), self._spend.stats())
        cost = self._spend.cost()
        if cost is not None:
            out["estimated_cost"] = cost
        return out

    # ------------------------------------------------------------- spend
    def set_spend_base(self, prompt_tokens: int, completion_tokens: int) -> None:
        """What earlier processes of the run already spent, counted against the spend caps from now on
        (replaces what an earlier call set; not part of ``stats()``)."""
        self._spend.base = (int(prompt_tokens), int(completion_tokens))

    @property
    def spend_base(self) -> tuple[int, int]:
        """(prompt, completion) tokens spent before this extractor; :meth:`set_spend_base` sets it."""
        return self._spend.base

    @spend_base.setter
    def spend_base(self, value: tuple[int, int]) -> None:
        self.set_spend_base(*value)

    def spend(self) -> tuple[int, int]:
        """(prompt, completion) tokens counted against the caps: ``spend_base`` plus every response so far."""
        return self._spend.total()

    # ------------------------------------------------------------- tokens
    def load_tokenizer(self) -> Any:
        """The ``llm.tokenizer`` tokenizer (loaded on first use), or None when none is configured."""
        return self.tokens.load()

    def count_tokens(self, text: str) -> int:
        return self.tokens.count(text)

    def truncate(self, text: str) -> tuple[str, bool]:
        """``text`` cut to ``max_doc_tokens`` tokens, and whether it was cut."""
        return self.tokens.truncate(text, self.llm.max_doc_tokens)

    # ------------------------------------------------------------- batch
    def extract(self, docs: list[Document]) -> list[Extraction]:
        if self._closed:
            raise RuntimeError("extractor is closed")
        docs = list(docs)
        if not docs:
            return []
        with self._extract_lock:
            t0 = time.monotonic()
            self._loop.ensure()
            # documents are cut, rendered and hashed here, so a tokenizer does not hold up the loop
            prepared = [self._prepare(d) if d.text.strip() else None for d in docs]
            try:
                return self._loop.run(self._extract_all(docs, prepared))
            finally:
                self._counts.wall_seconds += time.monotonic() - t0

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.close(self._transport.aclose)
        self._transport.client = None
        if self._cache is not None:
            self._cache.close()
            self._cache = None

    def __enter__(self) -> "OpenAIExtractor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _prepare(self, doc: Document) -> Prepared:
        text, truncated = self.truncate(doc.text)
        prompt = render(self.template, document=text, max_pairs=str(self.cfg.max_pairs_per_doc))
        key = cache_key(v=FORMAT_VERSION, kind="extract", model=self.llm.model, template=self.template,
                        document=text, max_pairs=self.cfg.max_pairs_per_doc, **self._params())
        est = self.count_tokens(prompt) + self.llm.max_tokens
        return Prepared(doc=doc, text=text, prompt=prompt, key=key, est_tokens=est, truncated=truncated)

    def _params(self) -> dict[str, Any]:
        return {"temperature": self.llm.temperature, "max_tokens": self.llm.max_tokens,
                "response_format": self.llm.response_format, "extra_body": self.llm.extra_body}

    async def _extract_all(self, docs: list[Document], prep: list[Prepared | None]) -> list[Extraction]:
        trip = self._transport.start_batch()
        self._cap_reached = None
        results: list[Extraction | None] = [None] * len(docs)
        groups: dict[str, list[int]] = {}  # one request per distinct cache key
        prepared: dict[str, Prepared] = {}
        try:
            for i, p in enumerate(prep):
                self._counts.docs += 1
                if p is None:
                    results[i] = self._finish(Extraction(pairs=[], status="empty", reason="empty_document"))
                    continue
                if p.truncated:
                    self._counts.truncated_docs += 1
                if p.key in groups:
                    self._counts.duplicate_docs += 1
                else:
                    prepared[p.key] = p
                groups.setdefault(p.key, []).append(i)
            await self._run_groups(docs, groups, prepared, results, trip)
            if self._cap_reached is not None and not trip.is_set():
                aborted = sum(r is None for r in results)
                self._counts.docs_aborted += aborted
                msg = (f"spend cap {self._cap_reached}; {len(docs) - aborted} of {len(docs)} documents of this "
                       "batch finished and are cached")
                key = self._cap_reached.partition("=")[0]
                self._cap_reached = None
                raise SpendCapReached(msg, results=results, usage=self.spend(), key=key)
            if trip.is_set():
                aborted = sum(r is None for r in results)
                self._counts.docs_aborted += aborted
                finished = len(docs) - aborted
                breaker = self._transport.breaker
                breaker.reset()
                err = EndpointDown(
                    f"the LLM endpoint {redact_url(self.llm.base_url)} has had no successful request for "
                    f"{self.llm.circuit_breaker_seconds:g}s (last error: {breaker.last_error or 'unknown'}); "
                    f"{finished} of {len(docs)} documents of this batch finished and are cached. "
                    "Run the same command again to resume once the endpoint is back.")
                err.results = results  # type: ignore[attr-defined]
                raise err
            return [r for r in results if r is not None]
        finally:
            self._transport.breaker.idle()

    async def _run_groups(self, docs: list[Document], groups: dict[str, list[int]], prepared: dict[str, Prepared],
                          results: list[Extraction | None], trip: asyncio.Event) -> None:
        """One task per distinct document, until all are done or the breaker trips; a duplicate gets a copy."""
        tasks = {asyncio.ensure_future(self._run_doc(prepared[key])): idx for key, idx in groups.items()}
        trip_wait = asyncio.ensure_future(trip.wait())
        pending: set[asyncio.Future] = set(tasks) | {trip_wait}
        try:
            while len(pending) > 1 or trip_wait not in pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    if t is trip_wait:
                        continue
                    try:
                        ext = t.result()
                    except CapStop as e:  # the cap forbade this document's next request; others finish
                        self._cap_reached = str(e)
                        continue
                    for j, i in enumerate(tasks[t]):
                        results[i] = self._finish(ext if j == 0 else Extraction(
                            pairs=[QAPair(question=p.question, answer=p.answer, doc_id=docs[i].id,
                                          extractor=self.name) for p in ext.pairs],
                            status=ext.status, reason=ext.reason, cached=ext.cached, stats=dict(ext.stats)))
                if trip.is_set():
                    break
        finally:
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def _finish(self, ext: Extraction) -> Extraction:
        name = f"docs_{ext.status}"
        setattr(self._counts, name, getattr(self._counts, name) + 1)
        self._counts.pairs += len(ext.pairs)
        return ext

    # ------------------------------------------------------------- one document
    async def _run_doc(self, p: Prepared) -> Extraction:
        try:
            return await self._run_doc_inner(p)
        except (asyncio.CancelledError, CapStop):
            raise
        except Exception as e:  # noqa: BLE001 - one document never takes the batch down
            log.error("document %s: unexpected error %s", p.doc.id, type(e).__name__)
            self._counts.failures["internal_error"] += 1
            return Extraction(pairs=[], status="failed", reason="internal_error")

    async def _run_doc_inner(self, p: Prepared) -> Extraction:
        doc_stats: Counter = Counter()
        doc_stats["truncated_doc"] = int(p.truncated)
        cached = False
        items: list[Any] | None = None
        hit = self._cache_get(p.key)
        if hit is not None:
            items = parse_pairs(str(hit.get("content", "")))
            if items is not None:
                cached = True
                self._counts.cache_hits += 1
        if items is None:
            res = await self._transport.call_json(p.prompt, p.est_tokens, "extract", doc_stats, p.doc.id)
            if res.items is None:
                self._counts.failures[res.reason] += 1
                log.warning("document %s: extraction failed after %d attempt(s): %s",
                            p.doc.id, doc_stats["attempts"], res.reason)
                return Extraction(pairs=[], status="failed", reason=res.reason, stats=dict(doc_stats))
            items = res.items
        v = validate_pairs(items, p.text, self.cfg)
        self._counts.rejections.update(v.rejections)
        self._counts.answers_truncated += v.answers_truncated
        doc_stats["rejected"] = sum(v.rejections.values())
        if not cached:
            self._cache_put(p.key, {**res.cache_value(),
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
            self._counts.cache_errors += 1
            log.warning("extraction cache read failed: %s", e)
            return None

    def _cache_put(self, key: str, value: dict[str, Any]) -> None:
        if self._cache is None:
            return
        try:
            self._cache.put(key, value)
        except (sqlite3.Error, OSError) as e:  # the extraction stands; it is only not cached
            self._counts.cache_errors += 1
            log.warning("extraction cache write failed: %s", e)

    async def _refine(self, p: Prepared, pairs: list[tuple[str, str]], doc_stats: Counter) -> list[tuple[str, str]]:
        listing = json.dumps({"pairs": [{"question": q, "answer": a} for q, a in pairs]}, ensure_ascii=False, indent=1)
        key = cache_key(v=FORMAT_VERSION, kind="refine", model=self.llm.model, template=self.refine_template,
                        document=p.text, pairs=listing, **self._params())
        items: list[Any] | None = None
        hit = self._cache_get(key)
        if hit is not None:
            items = parse_pairs(str(hit.get("content", "")))
            if items is not None:
                self._counts.refine_cache_hits += 1
        if items is None:
            prompt = render(self.refine_template, document=p.text, pairs=listing,
                            max_pairs=str(self.cfg.max_pairs_per_doc))
            est = self.count_tokens(prompt) + self.llm.max_tokens
            res = await self._transport.call_json(prompt, est, "refine", doc_stats, p.doc.id)
            if res.items is None:
                self._counts.refine_failures[res.reason] += 1
                return pairs  # the unrefined pairs stand
            items = res.items
            self._cache_put(key, res.cache_value())
        v = validate_pairs(items, p.text, self.cfg)
        self._counts.rejections.update({f"refine_{k}": n for k, n in v.rejections.items()})
        self._counts.refine_dropped += max(0, len(pairs) - len(v.pairs))
        return v.pairs
