"""Quality rules at extraction time (``extract.drop_rules``): a step between the extractor and everything after it.

Hygiene (:mod:`equal.hygiene`) drops a pair whose question is a bare heading, whose answer is only headings or
links, or that is too short, but only from what is exported and trained on; the bandit's reward, the warm-up
and the alignment would see every extracted pair. :class:`RuleFilteredExtractor` (on by default) applies the same rules right after
extraction, so that a pull whose pairs would all be dropped earns no reward: the bandit is steered towards
documents whose pairs can teach something. The rules and word limits are hygiene's
(:func:`equal.hygiene.quality_reason`); the extractor's fingerprint names the rules, so tables, caches and
resumes made without them are never taken for ones made with them.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..types import Document, Extraction, QAPair


def _rules_config(rules: Sequence[str]):
    from ..config import HygieneConfig

    return HygieneConfig(drop_rules=list(rules))


def kept_mask(pairs: Sequence[tuple[str, str]], rules: Sequence[str]) -> np.ndarray:
    """Per ``(question, answer)``, whether it passes every rule of ``rules`` (all True for no rules)."""
    from ..hygiene import quality_reason

    if not rules:
        return np.ones(len(pairs), dtype=bool)
    cfg = _rules_config(rules)
    return np.fromiter((quality_reason(q, a, cfg) is None for q, a in pairs), dtype=bool, count=len(pairs))


def filter_extraction(res: Extraction, rules: Sequence[str]) -> tuple[Extraction, dict[str, int]]:
    """``res`` with only its pairs that pass ``rules`` (an ``ok`` document left with none becomes ``empty``), and
    how many pairs each rule dropped."""
    from ..hygiene import quality_reason

    cfg = _rules_config(rules)
    kept: list[QAPair] = []
    dropped: dict[str, int] = {}
    for p in res.pairs:
        why = quality_reason(p.question, p.answer, cfg)
        if why is None:
            kept.append(p)
        else:
            dropped[why] = dropped.get(why, 0) + 1
    if not dropped:
        return res, dropped
    status, reason = res.status, res.reason
    if status == "ok" and not kept:
        status, reason = "empty", "every pair broke extract.drop_rules"
    return Extraction(pairs=kept, status=status, reason=reason, cached=res.cached, stats=res.stats), dropped


class RuleFilteredExtractor:
    """An extractor whose pairs pass ``rules`` (see the module docstring); everything else is the inner one's."""

    def __init__(self, inner: Any, rules: Sequence[str]) -> None:
        self.inner, self.rules = inner, list(rules)
        self.name = inner.name
        self._dropped: dict[str, int] = {}

    def extract(self, docs: list[Document]) -> list[Extraction]:
        out = []
        for res in self.inner.extract(docs):
            res, dropped = filter_extraction(res, self.rules)
            for k, v in dropped.items():
                self._dropped[k] = self._dropped.get(k, 0) + v
            out.append(res)
        return out

    def fingerprint(self) -> dict[str, Any]:
        return {**self.inner.fingerprint(), "drop_rules": list(self.rules)}

    def stats(self) -> dict[str, Any]:
        # flat counters, so that the Ray executor's workers' stats add up (equal.executors.merge_stats)
        return {**self.inner.stats(), "rule_dropped": sum(self._dropped.values()),
                **{f"rule_dropped_{k}": v for k, v in sorted(self._dropped.items())}}

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:  # set_spend_base and the like reach the inner extractor
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)
