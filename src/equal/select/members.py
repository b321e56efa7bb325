"""Cluster membership as two arrays, not one Python object per cluster."""

from __future__ import annotations

from typing import Iterator

import numpy as np


class Members:
    """Per arm, its documents (corpus rows) in the order pulls take them.

    Held as ``rows`` (every arm's rows, arm after arm, int64) and ``offsets`` (``k + 1`` int64; arm ``j``
    is ``rows[offsets[j]:offsets[j + 1]]``), so a million documents in a thousand clusters are two arrays.
    Behaves as a read-only sequence of arrays: ``members[j]`` is a view, ``len(members)`` is ``k``.
    """

    __slots__ = ("rows", "offsets")

    def __init__(self, rows: np.ndarray, offsets: np.ndarray) -> None:
        self.rows = np.ascontiguousarray(rows, dtype=np.int64)
        self.offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        if self.offsets.ndim != 1 or len(self.offsets) < 1 or self.offsets[0] != 0 \
                or self.offsets[-1] != len(self.rows) or (np.diff(self.offsets) < 0).any():
            raise ValueError("offsets must rise from 0 to len(rows)")

    @classmethod
    def from_labels(cls, labels: np.ndarray, k: int, order: np.ndarray) -> "Members":
        """Arms from ``labels`` (cluster per row), each arm's rows in the order they have in ``order``."""
        order = np.asarray(order, dtype=np.int64)
        lab = np.asarray(labels)[order]
        idx = np.argsort(lab, kind="stable")
        return cls(order[idx], np.searchsorted(lab[idx], np.arange(k + 1)))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, j: int) -> np.ndarray:
        j = int(j)
        if not -len(self) <= j < len(self):
            raise IndexError(f"arm {j} out of range ({len(self)} arms)")
        j %= len(self)
        return self.rows[self.offsets[j]: self.offsets[j + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        for j in range(len(self)):
            yield self[j]

    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def nbytes(self) -> int:
        return int(self.rows.nbytes + self.offsets.nbytes)
