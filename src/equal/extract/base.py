"""The extractor interface and its factory.

An extractor turns a batch of documents into one :class:`~equal.types.Extraction`
per document (batch in, batch out; concurrent inside where it calls a server).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from ..errors import StopError, UserError
from ..types import Document, Extraction


def cut_text(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters at a paragraph, sentence or word boundary."""
    text = text.strip()
    if len(text) <= limit:
        return text
    head = text[:limit]
    for sep in ("\n\n", "\n", ". ", " "):
        i = head.rfind(sep)
        if i > limit // 2:
            return head[: i + (1 if sep == ". " else 0)].strip()
    return head.strip()


class EndpointDown(UserError, RuntimeError):
    """The LLM endpoint has been unreachable for longer than the circuit breaker allows (exit code 2).

    The run stops cleanly: everything extracted so far is saved, and running the
    same command again resumes.
    """


class SpendCapReached(StopError, RuntimeError):
    """A hard spend cap (``extract.llm.max_cost`` / ``max_tokens_total``) was reached: no further request is
    sent. Requests already in flight finish (and are cached); ``results`` holds the batch's finished
    Extractions (``None`` for the rest), ``usage`` the ``(prompt_tokens, completion_tokens)`` counted
    against the cap, ``key`` the cap's config field. Like :class:`EndpointDown`, the run stops cleanly and resumes with a higher cap
    (exit code 3)."""

    def __init__(self, message: str, results: list | None = None, usage: tuple[int, int] = (0, 0),
                 key: str = "") -> None:
        super().__init__(message)
        self.results = results
        self.usage = usage
        self.key = key  # the config field of the cap, e.g. extract.llm.max_cost


@runtime_checkable
class Extractor(Protocol):
    name: str

    def extract(self, docs: list[Document]) -> list[Extraction]:
        """One Extraction per document, in order. Never raises for one bad document."""
        ...

    def fingerprint(self) -> dict[str, Any]:
        """What determines the extractor's results (for resume checks and cache keys)."""
        ...

    def stats(self) -> dict[str, Any]:
        """Accounting so far (calls, tokens, cache hits, failures ...), for summary.json."""
        ...

    def close(self) -> None:
        ...


@runtime_checkable
class SpendAware(Protocol):
    """An extractor that pays for what it does and enforces spend caps (the ``openai`` extractor).

    A run may span several processes (stopped at a cap, resumed); before the first batch of a process the
    pipeline calls :meth:`set_spend_base` with what the earlier processes of the run already spent, read
    from ``state/llm_usage.json``, so that the caps count the whole run. Extractors that spend nothing
    (the heuristic one) need not implement it; :func:`tell_spend_base` skips them.
    """

    def set_spend_base(self, prompt_tokens: int, completion_tokens: int) -> None:
        """Tokens spent before this extractor was made (earlier processes of the same run), to be counted
        against the spend caps together with its own. Replaces the value of an earlier call; does not
        change ``stats()``, which counts this extractor's own requests only."""
        ...


def tell_spend_base(extractor: Any, prompt_tokens: int, completion_tokens: int) -> bool:
    """Call ``extractor.set_spend_base(...)`` where the extractor is :class:`SpendAware`; whether it was."""
    if isinstance(extractor, SpendAware):
        extractor.set_spend_base(prompt_tokens, completion_tokens)
        return True
    return False
