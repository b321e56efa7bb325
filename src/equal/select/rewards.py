"""Rewards: how good the pairs of one pull are, given everything selected so far.

A reward sees the new pairs' vectors and the :class:`SelectedPool` (a capped,
seeded sample of every pair selected before, warm-up included), so that a
marginal-gain reward fits beside the paper's batch OT reward.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ..score import Scorer


def _unit_hash(seed: int, index: np.ndarray) -> np.ndarray:
    """A uniform [0, 1) value per (seed, index): splitmix64, vectorised; the same wherever it is computed."""
    with np.errstate(over="ignore"):
        z = (np.asarray(index, dtype=np.uint64) + np.uint64(seed & 0xFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


class SelectedPool:
    """A bounded sample of the pair vectors selected so far.

    Keeps at most ``cap`` vectors: those whose seeded hash of their global
    position is smallest (a bottom-k sample). The sample depends only on the
    sequence of vectors added, not on how it was split into calls, so a
    resumed run rebuilds it exactly from its journals.
    """

    def __init__(self, dim: int, cap: int = 1000, seed: int = 0) -> None:
        self.dim, self.cap, self.seed = dim, int(cap), int(seed)
        self.total = 0
        self.vectors = np.zeros((0, dim), dtype=np.float32)
        self._keys = np.zeros(0, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.vectors)

    def add(self, vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if len(vectors) == 0:
            return
        keys = _unit_hash(self.seed, np.arange(self.total, self.total + len(vectors)))
        self.total += len(vectors)
        v = np.concatenate([self.vectors, vectors])
        k = np.concatenate([self._keys, keys])
        if len(v) > self.cap:
            keep = np.sort(np.argpartition(k, self.cap - 1)[: self.cap])
            v, k = v[keep], k[keep]
        self.vectors, self._keys = v, k


@runtime_checkable
class Reward(Protocol):
    name: str

    def __call__(self, new: np.ndarray, pool: SelectedPool) -> float:
        """Reward of a pull whose pairs embed to ``new`` (rows), given the pool before it."""
        ...


class BatchOT:
    """The paper's reward: 1 - W(new pairs, reference); 0 for a pull that gave no pairs."""

    name = "batch"

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer

    def __call__(self, new: np.ndarray, pool: SelectedPool) -> float:  # noqa: ARG002
        return self.scorer.reward(new)


class MarginalGain:
    """What the new pairs do to the OT distance of everything selected so far.

    With ``S`` the pool (a capped sample of what was selected) and ``N`` the new
    pairs, the *gain* is ``W(S) - W(S ∪ N)``. The reward puts it on the scale
    of :class:`BatchOT`: the cost per new pair that explains the change,
    ``c = (|S ∪ N| W(S ∪ N) - |S| W(S)) / |N|``, and the reward is ``1 - c``.
    With an empty pool this is exactly the batch reward; a pull that gave no
    pairs gets 0. It rewards pairs that fill what the selection still misses
    of the reference, not pairs like those already taken.
    """

    name = "marginal"

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer
        self._cache: tuple[int, float] | None = None  # (pool.total, W(S))

    def base(self, pool: SelectedPool) -> float:
        if self._cache is None or self._cache[0] != pool.total:
            self._cache = (pool.total, self.scorer.distance(pool.vectors) if len(pool) else float("nan"))
        return self._cache[1]

    def gain(self, new: np.ndarray, pool: SelectedPool) -> float:
        if len(new) == 0 or len(pool) == 0:
            return 0.0
        return self.base(pool) - self.scorer.distance(np.concatenate([pool.vectors, new]))

    def __call__(self, new: np.ndarray, pool: SelectedPool) -> float:
        if len(new) == 0:
            return 0.0
        if len(pool) == 0:
            return self.scorer.reward(new)
        w_s = self.base(pool)
        w_sn = self.scorer.distance(np.concatenate([pool.vectors, new]))
        c = ((len(pool) + len(new)) * w_sn - len(pool) * w_s) / len(new)
        return 1.0 - c


def make_reward(name: str, scorer: Scorer) -> BatchOT | MarginalGain:
    if name == "batch":
        return BatchOT(scorer)
    if name == "marginal":
        return MarginalGain(scorer)
    raise ValueError(f"unknown reward: {name} (batch or marginal)")
