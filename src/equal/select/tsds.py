"""TSDS: task-specific data selection by regularised optimal transport.

Liu, Karbasi and Rekatsinas (NeurIPS 2024), "TSDS: Data Selection for
Task-Specific Model Finetuning"; this follows the KNN-KDE algorithm of the
authors' code (github.com/ZifanL/TSDS, ``tsds.py``), vectorised.

The selection is a probability ``p`` over the candidates obtained by
transporting the uniform distribution over the M reference (query) items to
the candidates. The objective trades the transport cost (distance between a
reference item and the candidates it sends mass to, scaled by ``1 / C``,
weight ``alpha``) against a diversity regulariser (weight ``1 - alpha``) that
caps the density-weighted mass each (reference, candidate) pair may carry.
With a kernel density estimate ``kde(x) >= 1`` per candidate, the optimum has
a closed form: there is one global level ``s`` and each reference item ``j``
fills its candidates in order of distance, candidate ``x`` receiving at most
``1 / (M s kde(x))``, until its mass ``1 / M`` is spent. So every reference
item spreads its mass over its nearest candidates, and a candidate with ``r``
near-duplicates (kde about ``r``) gets about ``1 / r`` of what a lone
candidate at the same distance gets: the copies of a duplicated document
share one document's worth of probability.

The level ``s`` is the first breakpoint at which the marginal transport cost
of spreading further outweighs the diversity gain,
``alpha / C * total_cost(s) >= (1 - alpha) * M``; ``total_cost`` is
non-decreasing in ``s`` so it is found with one sort and one cumulative sum
over the ``M * (k - 1)`` breakpoints (the authors' code pops them from a heap
in a Python loop).

Geometry: vectors are L2-normalised and neighbours found by inner product
(cosine) with faiss ``IndexFlatIP``, exact; the transport cost is the
Euclidean distance between the normalised vectors,
``sqrt(2 - 2 cos)`` in [0, 2]. The defaults ``C = 5``, ``sigma = 0.75`` and
``alpha = 0.5`` are those of the authors' ``config.yaml``, whose example
embeddings are unit-norm too.

Kernel density: ``kde(x) = sum_y max(0, 1 - |x - y|^2 / sigma^2)`` over the
``density_k`` nearest candidates ``y`` of ``x`` (``x`` itself included, so
``kde >= 1``), computed, as in the authors' code, only for the candidates
that are among some reference item's ``k`` nearest, and among those
candidates. ``sigma = 0`` turns the density off (``kde = 1``: the paper's
KNN-Uniform).

Scale: the candidates are read ``chunk_size`` rows at a time (a memmap of
millions of rows is fine) and searched exactly against the M reference
vectors (cost ``M * n_docs * d``). The density search involves only the at
most ``M * k`` prefetched candidates; above ``exact_density_max`` of them an
``IndexIVFFlat`` (``nlist = sqrt(U) / 2``, ``nprobe = 10``, as in the
authors' code) replaces the exact search.
"""

from __future__ import annotations

import numpy as np

from .dsir import dsir_order

__all__ = ["tsds_probabilities", "tsds_order"]


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.array(x, dtype=np.float32, copy=True)
    if x.ndim != 2:
        raise ValueError("vectors must be a 2-d array")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.maximum(norms, np.float32(1e-12), out=norms)
    x /= norms
    return x


def _knn_chunked(queries: np.ndarray, base, k: int, chunk_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k inner products of normalised ``queries`` against ``base``
    (normalised chunk by chunk), merged over chunks. Returns (sims, ids),
    each (nq, k), sorted by decreasing similarity."""
    import faiss

    n, d = base.shape
    heap = faiss.ResultHeap(len(queries), k, keep_max=True)
    for start in range(0, n, chunk_size):
        block = _normalise(base[start:start + chunk_size])
        index = faiss.IndexFlatIP(d)
        index.add(block)
        sims, ids = index.search(queries, min(k, len(block)))
        heap.add_result(sims, np.where(ids >= 0, ids + start, -1))
    heap.finalize()
    # ties (exact duplicates) in order of index, whatever the chunking
    order = np.lexsort((heap.I, -heap.D), axis=-1)
    return np.take_along_axis(heap.D, order, axis=1), np.take_along_axis(heap.I, order, axis=1)


def _kde(vecs: np.ndarray, sigma: float, density_k: int, exact_max: int) -> np.ndarray:
    """Truncated Epanechnikov-style KDE of each row of normalised ``vecs`` among the rows."""
    import faiss

    u, d = vecs.shape
    kk = min(density_k, u)
    if u <= exact_max:
        index = faiss.IndexFlatIP(d)
        index.add(vecs)
    else:
        nlist = max(1, int(np.sqrt(u)) // 2)
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(vecs)
        index.add(vecs)
        index.nprobe = 10
    sims, ids = index.search(vecs, kk)
    d2 = np.maximum(2.0 - 2.0 * sims.astype(np.float64), 0.0)
    kernel = np.where(ids >= 0, np.maximum(1.0 - d2 / sigma ** 2, 0.0), 0.0)
    # a point always counts itself, even if an approximate search missed it
    return np.maximum(kernel.sum(axis=1), 1.0)


def tsds_probabilities(doc_vecs, ref_vecs, k: int = 200, alpha: float = 0.5, C: float = 5.0,
                       sigma: float = 0.75, density_k: int = 100, chunk_size: int = 65_536,
                       exact_density_max: int = 50_000) -> np.ndarray:
    """TSDS (KNN-KDE) selection probability of every candidate.

    Parameters
    ----------
    doc_vecs : array-like, shape (n_docs, d)
        Candidate embeddings; a ``np.memmap`` is read ``chunk_size`` rows at a
        time. L2-normalised internally.
    ref_vecs : array-like, shape (M, d)
        Reference (query) embeddings, L2-normalised internally.
    k : int, optional
        Candidates prefetched per reference item (the authors' ``max_K``,
        5000 there, capped at n_docs / 10). Only these can get probability:
        the support has at most ``M * k`` candidates. Default 200, smaller
        than the authors' because the density search grows with
        ``(M * k)^2``. Where the distances to the neighbours are nearly equal
        (e.g. random vectors) each reference spreads over all ``k``; if
        ``(probs > 0).sum()`` is close to ``M * k``, ``k`` truncates the
        solution and a larger ``k`` changes it. Capped at n_docs.
    alpha : float, optional
        Weight of the transport cost in [0, 1]; ``1 - alpha`` weighs the
        diversity regulariser. 1: all of a reference item's mass on its
        nearest candidate; 0: spread evenly (after the density correction)
        over all ``k`` neighbours. Default 0.5 (authors' default).
    C : float, optional
        Scale of the distances (cost is ``distance / C``); authors' default 5
        for unit-norm embeddings. Larger C spreads mass wider.
    sigma : float, optional
        Kernel radius of the density estimate, in Euclidean distance between
        unit vectors (0.75 is cosine similarity above 0.72). 0 disables the
        density correction. Default 0.75 (authors' default).
    density_k : int, optional
        Neighbours summed in the density estimate (the authors' ``kde_K``,
        1000 there). A candidate with more near-duplicates than this is
        counted as having ``density_k``. Default 100.
    chunk_size : int, optional
        Candidate rows searched at a time.
    exact_density_max : int, optional
        Above this many prefetched candidates the density search uses an IVF
        index (approximate) instead of an exact one.

    Returns
    -------
    probs : ndarray of float64, shape (n_docs,)
        Non-negative, sums to 1; zero outside the prefetched neighbourhoods.
    """
    n_docs = int(doc_vecs.shape[0])
    if n_docs == 0:
        raise ValueError("doc_vecs is empty")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError("alpha must be in [0, 1]")
    if C <= 0:
        raise ValueError("C must be > 0")
    if sigma < 0:
        raise ValueError("sigma must be >= 0")
    if k < 1 or density_k < 1 or chunk_size < 1:
        raise ValueError("k, density_k and chunk_size must be >= 1")
    ref = _normalise(ref_vecs)
    M = len(ref)
    if M == 0:
        raise ValueError("ref_vecs is empty")
    if ref.shape[1] != doc_vecs.shape[1]:
        raise ValueError(f"dimension mismatch: docs {doc_vecs.shape[1]}, references {ref.shape[1]}")
    K = min(int(k), n_docs)

    sims, nbr = _knn_chunked(ref, doc_vecs, K, chunk_size)  # (M, K), nearest first
    if (nbr < 0).any():  # cannot happen with exact search and K <= n_docs
        raise RuntimeError("faiss returned fewer neighbours than asked for")
    dist = np.sqrt(np.maximum(2.0 - 2.0 * sims.astype(np.float64), 0.0))

    if sigma > 0:
        union = np.unique(nbr)
        kde_union = _kde(_normalise(doc_vecs[union]), float(sigma), int(density_k), int(exact_density_max))
        kde = kde_union[np.searchsorted(union, nbr)]
    else:
        kde = np.ones_like(dist)

    u = 1.0 / kde
    U = np.cumsum(u, axis=1)  # U[j, i]: level at which j's first i+1 neighbours are full
    if K > 1:
        # Breakpoint (j, i): at level s = U[j, i] reference j has filled its
        # first i+1 neighbours; going past it moves mass to neighbour i+1 and
        # raises j's marginal cost by (dist[j, i+1] - dist[j, i]) * U[j, i] >= 0.
        bp = U[:, :-1].ravel()
        inc = ((dist[:, 1:] - dist[:, :-1]) * U[:, :-1]).ravel()
        order = np.argsort(bp, kind="stable")
        total = np.cumsum(inc[order])
        stop = np.flatnonzero(alpha / C * total >= (1.0 - alpha) * M)
        s = bp[order[stop[0]]] if stop.size else bp.max()
        # each reference fills neighbours in order, neighbour i capped at
        # u[j, i] / (M s); the last neighbour takes whatever is left
        filled = np.minimum(U / (M * s), 1.0 / M)
        filled[:, -1] = 1.0 / M
        mass = np.diff(filled, axis=1, prepend=0.0)
    else:
        mass = np.full((M, 1), 1.0 / M)

    probs = np.bincount(nbr.ravel(), weights=mass.ravel(), minlength=n_docs)
    probs = np.maximum(probs, 0.0)
    return probs / probs.sum()


def tsds_order(probs: np.ndarray, n: int, rng=None) -> np.ndarray:
    """Sample ``n`` distinct candidates without replacement, proportionally to ``probs``.

    Successive sampling (each draw proportional to the probability among the
    candidates left) by the Gumbel-top-k trick. The authors' code draws a
    multinomial sample with replacement; a ranking needs distinct documents.

    Parameters
    ----------
    probs : array-like, shape (n_docs,)
        Non-negative selection probabilities (e.g. from :func:`tsds_probabilities`).
    n : int
        Number of candidates, 0 <= n <= n_docs. Candidates of probability 0
        come after all the others, in uniformly random order.
    rng : numpy.random.Generator or int or None, optional
        Generator or seed; a fixed seed gives a fixed order.

    Returns
    -------
    order : ndarray of int64, shape (n,)
        Distinct candidate indices in selection order.
    """
    p = np.asarray(probs, dtype=np.float64).ravel()
    if np.isnan(p).any() or (p < 0).any() or np.isinf(p).any():
        raise ValueError("probs must be finite and non-negative")
    with np.errstate(divide="ignore"):
        logp = np.log(p)
    return dsir_order(logp, n, rng)
