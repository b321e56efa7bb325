"""faiss k-means on a sample of the vectors, then chunked assignment of every document."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Clustering:
    centroids: np.ndarray  # (k, d) float32
    labels: np.ndarray  # (n,) int32
    inertia: float

    @property
    def k(self) -> int:
        return int(len(self.centroids))

    def members(self, seed: int) -> list[np.ndarray]:
        """Per cluster, its document indices in a seeded random order (the order pulls take them)."""
        rng = np.random.default_rng([seed, 0xC1])
        perm = rng.permutation(len(self.labels))
        lab = self.labels[perm]
        order = np.argsort(lab, kind="stable")
        bounds = np.searchsorted(lab[order], np.arange(self.k + 1))
        return [perm[order[bounds[j]: bounds[j + 1]]].astype(np.int64) for j in range(self.k)]


ASSIGN_CHUNK = 65536  # rows per nearest-centroid search; chunks start at multiples of it


def assign_chunk(vectors: np.ndarray, centroids: np.ndarray, start: int, stop: int) -> tuple[np.ndarray, float]:
    """Nearest centroid (L2, faiss flat index) of rows ``start:stop``, and the sum of their squared distances."""
    import faiss

    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    dist, idx = index.search(np.ascontiguousarray(vectors[start: stop], dtype=np.float32), 1)
    return idx[:, 0].astype(np.int32), float(dist.sum())


def assign(vectors: np.ndarray, centroids: np.ndarray, chunk: int = ASSIGN_CHUNK) -> tuple[np.ndarray, float]:
    """Labels of every row (searched ``chunk`` rows at a time) and the inertia (summed chunk by chunk, in order)."""
    import faiss

    n = len(vectors)
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    labels = np.empty(n, dtype=np.int32)
    inertia = 0.0
    for s in range(0, n, chunk):
        dist, idx = index.search(np.ascontiguousarray(vectors[s: s + chunk], dtype=np.float32), 1)
        labels[s: s + chunk] = idx[:, 0]
        inertia += float(dist.sum())
    return labels, inertia


def kmeans(vectors: np.ndarray, k: int, niter: int = 50, seed: int = 0, max_points_per_centroid: int = 256,
           nredo: int = 1, chunk: int = ASSIGN_CHUNK, assign_fn=None) -> Clustering:
    """Cluster ``vectors`` (memmap welcome) into ``k`` groups with faiss.

    Trains on at most ``k * max_points_per_centroid`` rows sampled with ``seed``
    (read from the memmap in sorted order), then assigns all rows chunk by chunk. ``nredo`` runs k-means that many times and keeps the best.
    ``assign_fn(vectors, centroids, chunk) -> (labels, inertia)`` does the assignment (default :func:`assign`
    here; an executor's runs it on workers, chunk for chunk the same).
    """
    import faiss

    n, d = vectors.shape
    if k > n:
        raise ValueError(f"k={k} is larger than the corpus ({n} documents)")
    n_train = min(n, k * max_points_per_centroid)
    rng = np.random.default_rng([seed, 0xC2])
    rows = np.sort(rng.choice(n, size=n_train, replace=False)) if n_train < n else np.arange(n)
    train = np.ascontiguousarray(vectors[rows], dtype=np.float32)
    km = faiss.Kmeans(d, k, niter=niter, seed=seed, max_points_per_centroid=max_points_per_centroid,
                      min_points_per_centroid=1, nredo=nredo, verbose=False)
    km.train(train)
    del train
    labels, inertia = (assign_fn or assign)(vectors, np.asarray(km.centroids, dtype=np.float32), chunk)
    return Clustering(centroids=np.asarray(km.centroids, dtype=np.float32), labels=labels, inertia=inertia)
