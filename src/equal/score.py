"""Optimal-transport distance between sets of embeddings (POT), the bandit's reward and the evaluation."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def cost_matrix(X: np.ndarray, Y: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """Ground cost between rows of ``X`` and ``Y`` (both L2-normalised).

    ``cosine``: 1 - cos(x, y) in [0, 2]; ``euclidean``: ||x - y||.
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if metric == "cosine":
        return np.clip(1.0 - X @ Y.T, 0.0, 2.0)
    if metric == "euclidean":
        import ot

        return ot.dist(X, Y, metric="euclidean")
    raise ValueError(f"unknown metric: {metric}")


def ot_distance(X: np.ndarray, Y: np.ndarray, metric: str = "cosine", method: str = "emd",
                reg: float = 0.05) -> float:
    """Wasserstein distance between the uniform empirical distributions on ``X`` and ``Y``.

    Parameters
    ----------
    X, Y : (n, d), (m, d) arrays of normalised embeddings.
    metric : "cosine" or "euclidean" ground cost.
    method : "emd" (exact, ``ot.emd2``) or "sinkhorn" (entropic, ``ot.sinkhorn2`` with ``reg``).

    Returns
    -------
    float
        The transport cost; ``nan`` when either set is empty.
    """
    import ot

    if len(X) == 0 or len(Y) == 0:
        return float("nan")
    M = cost_matrix(X, Y, metric)
    a = np.full(len(X), 1.0 / len(X))
    b = np.full(len(Y), 1.0 / len(Y))
    if method == "emd":
        return float(ot.emd2(a, b, M, numItermax=1_000_000))
    if method == "sinkhorn":
        return float(ot.sinkhorn2(a, b, M, reg))
    raise ValueError(f"unknown OT method: {method}")


class Scorer:
    """OT reward and evaluation against a fixed reference sample.

    ``reward(vectors) = 1 - ot_distance(vectors, reference)``, and 0 when a pull
    gave no pairs. One scorer serves both the bandit and the final evaluation,
    with the embedder passed in (``encode``).
    """

    def __init__(self, reference: np.ndarray, encode: Callable[[Sequence[str]], np.ndarray] | None = None,
                 metric: str = "cosine", method: str = "emd", reg: float = 0.05) -> None:
        self.reference = np.asarray(reference, dtype=np.float32)
        self.encode = encode
        self.metric, self.method, self.reg = metric, method, reg

    def distance(self, vectors: np.ndarray) -> float:
        return ot_distance(vectors, self.reference, self.metric, self.method, self.reg)

    def reward(self, vectors: np.ndarray) -> float:
        if len(vectors) == 0:
            return 0.0
        return 1.0 - self.distance(vectors)
