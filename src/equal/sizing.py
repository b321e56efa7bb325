"""Sizes derived from the corpus and the config: the budget in documents, the warm-up, k, arms per round."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from .errors import UserError
from .select.registry import is_ranking


@dataclass(frozen=True)
class Plan:
    """Sizes derived from the corpus and the config (the 'auto' values resolved)."""

    n_docs: int
    budget_docs: int
    warmup_docs: int
    k: int
    clusters_per_round: int
    docs_per_pull: int

    @classmethod
    def make(cls, cfg: Any, n_docs: int) -> "Plan":
        """The plan of a run of ``cfg`` (a :class:`~equal.config.Config`) over ``n_docs`` usable documents."""
        budget = requested_budget(cfg.budget, n_docs)
        budget = max(1, min(budget, n_docs))
        if is_ranking(cfg.policy):  # a document ranking: no warm-up, one arm walked in rank order
            if cfg.policy == "full":
                budget = n_docs
            return cls(n_docs=n_docs, budget_docs=budget, warmup_docs=0, k=1, clusters_per_round=1,
                       docs_per_pull=cfg.bandit.docs_per_pull * 5)
        warm = min(int(budget * cfg.align.warmup_fraction), cfg.align.warmup_max_docs)
        if cfg.cluster.k is not None:
            k = cfg.cluster.k
            if k > n_docs:
                raise UserError(f"cluster.k={k} is larger than the corpus ({n_docs} usable documents)")
        else:
            target = min(math.sqrt(n_docs), budget / 8)
            k = int(min(1000, max(2, round(target)), n_docs))
        cpr = cfg.bandit.clusters_per_round or int(min(50, max(1, round(k / 25))))
        return cls(n_docs=n_docs, budget_docs=budget, warmup_docs=warm, k=k, clusters_per_round=min(cpr, k),
                   docs_per_pull=cfg.bandit.docs_per_pull)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def requested_budget(budget: float, n_docs: int) -> int:
    """The budget as a document count before clamping: a fraction of ``n_docs`` (<= 1) or a count."""
    return int(round(budget * n_docs)) if budget <= 1 else int(budget)


def clamp_notice(budget: float, n_docs: int) -> str | None:
    """One line when a budget asks for more documents than the corpus has (it is clamped), else None."""
    want = requested_budget(budget, n_docs)
    if want > n_docs:
        return f"budget {want} is larger than the corpus ({n_docs} usable documents); extracting at most {n_docs}"
    return None
