"""What the ``openai`` extractor spends: token usage, its cost, and the hard spend caps.

The caps (``llm.max_tokens_total``, ``llm.max_cost``) are checked before every request is sent, against
the tokens the responses' ``usage`` reported plus :attr:`Spend.base` (what earlier processes of the run
spent). Once one is reached :meth:`Spend.check` raises :class:`CapStop`, which stops that document's
task; the extractor turns it into :class:`~equal.extract.base.SpendCapReached`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .stats import counters


def spend_cost(prompt_tokens: int, completion_tokens: int, llm: Any) -> float | None:
    """The cost of the tokens at the configured prices (None when no price is set)."""
    pp, pc = llm.price_prompt_per_mtok, llm.price_completion_per_mtok
    if pp is None and pc is None:
        return None
    return prompt_tokens * (pp or 0.0) / 1e6 + completion_tokens * (pc or 0.0) / 1e6


class CapStop(Exception):
    """Raised inside a document's task when a spend cap forbids its next request."""


@dataclass
class Usage:
    """Token sums of the responses' ``usage`` (extraction and refine requests apart)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    refine_prompt_tokens: int = 0
    refine_completion_tokens: int = 0
    missing_usage: int = 0  # responses that reported no usage


class Spend:
    """Token accounting against the caps of ``llm`` (an ``LLMConfig``)."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self.usage = Usage()
        #: (prompt, completion) tokens spent before this extractor (earlier processes of the run)
        self.base: tuple[int, int] = (0, 0)

    def record(self, kind: str, usage: Any) -> tuple[int, int]:
        """Count one response's ``usage`` (an object with ``prompt_tokens`` / ``completion_tokens``, or
        None) for a request of ``kind`` (``extract`` or ``refine``); returns its (prompt, completion)."""
        pt = int(getattr(usage, "prompt_tokens", 0) or 0)
        ct = int(getattr(usage, "completion_tokens", 0) or 0)
        u = self.usage
        if usage is None:
            u.missing_usage += 1
        if kind == "extract":
            u.prompt_tokens += pt
            u.completion_tokens += ct
        else:
            u.refine_prompt_tokens += pt
            u.refine_completion_tokens += ct
        return pt, ct

    def own(self) -> tuple[int, int]:
        """(prompt, completion) tokens of this extractor's responses, refine requests included."""
        u = self.usage
        return u.prompt_tokens + u.refine_prompt_tokens, u.completion_tokens + u.refine_completion_tokens

    def total(self) -> tuple[int, int]:
        """(prompt, completion) tokens counted against the caps: :attr:`base` plus every response so far."""
        p, c = self.own()
        return self.base[0] + p, self.base[1] + c

    def over_cap(self) -> str | None:
        """Which cap the spend has reached (a sentence), or None."""
        cap_tokens, cap_cost = self.llm.max_tokens_total, self.llm.max_cost
        if cap_tokens is None and cap_cost is None:
            return None
        p, c = self.total()
        if cap_tokens is not None and p + c >= cap_tokens:
            return f"extract.llm.max_tokens_total={cap_tokens} reached ({p + c} tokens spent: {p} prompt, {c} completion)"
        cost = spend_cost(p, c, self.llm)
        if cap_cost is not None and cost is not None and cost >= cap_cost:
            return f"extract.llm.max_cost={cap_cost:g} reached ({cost:.6g} spent on {p} prompt and {c} completion tokens)"
        return None

    def check(self) -> None:
        """Raise :class:`CapStop` when a cap has been reached (called right before a request is sent)."""
        cap = self.over_cap()
        if cap is not None:
            raise CapStop(cap)

    def cost(self) -> float | None:
        """The cost of this extractor's tokens at the configured prices (None when no price is set)."""
        return spend_cost(*self.own(), self.llm)

    def stats(self) -> dict[str, Any]:
        return counters(self.usage)
