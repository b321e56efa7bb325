"""EQUAL's Document Sampling score: UCB over clusters."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Policy(Protocol):
    def choose(self, n: int, available: np.ndarray) -> list[int]:
        """Up to ``n`` arms among those where ``available`` is True, best first."""
        ...

    def update(self, arm: int, reward: float, pulls: int = 1) -> None:
        ...


class UCB:
    """DS_j = mean_j + alpha * sqrt(2 ln(sum_i T_i) / T_j); an arm never pulled scores +inf.

    ``schedule="paper"`` uses alpha = 1 / (sum T + 1) as the paper writes;
    ``"constant"`` keeps ``alpha`` fixed as the authors' code does.
    Ties (e.g. among never-pulled arms) go to the lower arm index.
    """

    def __init__(self, k: int, alpha: float = 0.02, schedule: str = "constant") -> None:
        self.k = k
        self.alpha = alpha
        self.schedule = schedule
        self.pulls = np.zeros(k, dtype=np.int64)
        self.sums = np.zeros(k, dtype=np.float64)

    def current_alpha(self) -> float:
        if self.schedule == "paper":
            return 1.0 / (float(self.pulls.sum()) + 1.0)
        return self.alpha

    def means(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.pulls > 0, self.sums / np.maximum(self.pulls, 1), np.nan)

    def scores(self) -> np.ndarray:
        total = float(self.pulls.sum())
        log_total = np.log(total) if total > 0 else 0.0
        with np.errstate(invalid="ignore", divide="ignore"):
            bonus = self.current_alpha() * np.sqrt(2.0 * log_total / self.pulls)
            s = self.sums / self.pulls + bonus
        return np.where(self.pulls > 0, s, np.inf)

    def choose(self, n: int, available: np.ndarray) -> list[int]:
        s = np.where(available, self.scores(), -np.inf)
        order = np.argsort(-s, kind="stable")
        return [int(j) for j in order[:n] if available[j]]

    def update(self, arm: int, reward: float, pulls: int = 1) -> None:
        self.pulls[arm] += pulls
        self.sums[arm] += reward * pulls

    def state(self) -> dict:
        return {"pulls": self.pulls.tolist(), "sums": self.sums.tolist()}

    def load_state(self, state: dict) -> None:
        self.pulls = np.asarray(state["pulls"], dtype=np.int64)
        self.sums = np.asarray(state["sums"], dtype=np.float64)
