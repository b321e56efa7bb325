"""The counters of the ``openai`` extractor's units, and the one ``stats()`` dict they make together.

Each unit keeps its counters in a small dataclass (documents in the extractor, requests in the
transport, tokens in the spend); :func:`counters` turns one into plain values and :func:`merge` puts
them in the order ``summary.json`` has always had.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

#: The keys of ``OpenAIExtractor.stats()``, in order (``estimated_cost`` follows where a price is set).
STATS_KEYS = (
    "docs", "docs_ok", "docs_empty", "docs_failed", "docs_aborted", "pairs",
    "calls", "retries", "prompt_tokens", "completion_tokens",
    "cache_hits", "cache_errors", "duplicate_docs",
    "failures", "errors", "rejections",
    "truncated_docs", "truncated_completions", "answers_truncated", "missing_usage",
    "refine_calls", "refine_prompt_tokens", "refine_completion_tokens", "refine_cache_hits",
    "refine_dropped", "refine_failures",
    "response_format", "response_format_rejections",
    "rate_limit_wait_seconds", "backoff_seconds", "wall_seconds",
)


def counters(obj: Any) -> dict[str, Any]:
    """A counters dataclass as plain values: Counters as dicts, seconds rounded to milliseconds."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        out[f.name] = dict(v) if isinstance(v, Counter) else round(v, 3) if isinstance(v, float) else v
    return out


def merge(*parts: dict[str, Any]) -> dict[str, Any]:
    """The units' stats in :data:`STATS_KEYS` order; each key comes from exactly one unit."""
    merged: dict[str, Any] = {}
    for part in parts:
        clash = merged.keys() & part.keys()
        if clash:
            raise AssertionError(f"stats keys counted twice: {sorted(clash)}")
        merged.update(part)
    if merged.keys() != set(STATS_KEYS):
        raise AssertionError(f"stats keys differ: {sorted(merged.keys() ^ set(STATS_KEYS))}")
    return {k: merged[k] for k in STATS_KEYS}
