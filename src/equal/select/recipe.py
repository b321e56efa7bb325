"""The choices a selection run makes before and around its loop, as plain functions.

A live run (:class:`equal.run.Pipeline`) and a replay (:mod:`equal.experiments.compare`)
call these same functions, so that both pick the same documents for the same
seed and config.

Strategies (``policy`` in the config, ``--policy`` on the command line):

* bandits over k-means clusters: ``equal`` (UCB, the paper's rule),
  ``equal-no-align``, ``greedy``, ``epsilon-greedy``, ``thompson``,
  ``uniform-clusters`` (round robin); all share the warm-up, prior,
  in-cluster order and reward settings of the ``bandit`` section, so they
  differ only in the arm rule;
* document rankings with no warm-up and no clusters: ``random``,
  ``avg-sim`` (RDS+: mean cosine to the reference), ``classifier`` (a linear
  classifier of reference items against a fixed sample of corpus documents,
  :mod:`equal.select.classifier`), ``tsds``, ``dsir``, ``full`` (every document).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .members import Members
from .registry import RANKINGS, align_mode, check_policy, is_ranking, make_policy, strategies  # noqa: F401


# ------------------------------------------------------------------ reference samples
def reward_sample(n_items: int, size: int | None, seed: int) -> np.ndarray:
    """Rows of the reference the reward uses (seeded; all when ``size`` is None or larger)."""
    if not size or size >= n_items:
        return np.arange(n_items)
    rng = np.random.default_rng([seed, 0x7EF])
    return np.sort(rng.permutation(n_items)[:size])


def prior_sample(n_items: int, size: int) -> np.ndarray:
    """Rows of the reference whose mean direction the similarity prior uses (fixed, seed-independent)."""
    if size >= n_items:
        return np.arange(n_items)
    return np.sort(np.random.default_rng(0x7EF1).permutation(n_items)[:size])


# ------------------------------------------------------------------ zero-cost scores
def similarity_scores(doc_vecs: np.ndarray, ref_vecs: np.ndarray, kind: str = "mean", k: int = 20,
                      chunk: int = 32_768) -> np.ndarray:
    """How close each document is to the reference, read in row chunks (memmaps welcome).

    ``mean``: mean cosine to the reference items (RDS+ / avg-sim); with normalised vectors, the dot
    product with the mean reference vector. ``knn``: mean cosine to the document's ``k`` nearest
    reference items, which rewards being close to *some* of the reference, as optimal transport does.
    ``mix``: the mean of a document's two ranks, by ``mean`` and by ``knn``, as a quantile in [0, 1]
    (1: first by both), so that its order lies between the two and the scales of the two scores do not matter.
    ``classifier``: the decision value of a linear classifier of the reference items against a fixed sample of
    the documents (:func:`equal.select.classifier.classifier_scores`).
    """
    if kind == "classifier":
        from .classifier import classifier_scores

        return classifier_scores(doc_vecs, ref_vecs, chunk=chunk)
    if kind == "mix":
        return mix_scores(similarity_scores(doc_vecs, ref_vecs, "mean", k, chunk),
                          similarity_scores(doc_vecs, ref_vecs, "knn", k, chunk))
    ref = np.asarray(ref_vecs, dtype=np.float32)
    mean = ref.mean(axis=0)
    k = int(min(max(1, k), len(ref)))
    out = np.empty(len(doc_vecs), dtype=np.float32)
    for s in range(0, len(doc_vecs), chunk):
        block = np.asarray(doc_vecs[s: s + chunk], dtype=np.float32)
        if kind == "mean":
            out[s: s + len(block)] = block @ mean
        elif kind == "knn":
            sims = block @ ref.T
            out[s: s + len(block)] = np.partition(sims, len(ref) - k, axis=1)[:, len(ref) - k:].mean(axis=1)
        else:
            raise ValueError(f"unknown similarity: {kind} (mean, knn, mix or classifier)")
    return out


def mix_scores(mean: np.ndarray, knn: np.ndarray) -> np.ndarray:
    """The ``mix`` similarity from the ``mean`` and ``knn`` scores of the same documents: the mean of each
    document's two ranks as a quantile in [0, 1]. Integer ranks are summed first, so that equal sums tie
    exactly (then the first row comes first)."""
    ranks = _ranks(mean) + _ranks(knn)
    return (ranks / max(1, 2 * (len(ranks) - 1))).astype(np.float32)


class Similarities:
    """The zero-cost similarity scores of one set of document vectors to one reference, each kind computed
    once and kept (``mix`` from the kept ``mean`` and ``knn`` scores; ``classifier`` does not depend on ``k``):
    ``sims(kind)``. ``known`` seeds kinds already computed."""

    def __init__(self, doc_vecs: np.ndarray, ref_vecs: np.ndarray, k: int, known: dict | None = None):
        self.doc_vecs, self.ref_vecs, self.k = doc_vecs, ref_vecs, k
        self._scores: dict[str, np.ndarray] = dict(known or {})

    def __call__(self, kind: str) -> np.ndarray:
        if kind not in self._scores:
            self._scores[kind] = (mix_scores(self("mean"), self("knn")) if kind == "mix"
                                  else similarity_scores(self.doc_vecs, self.ref_vecs, kind, self.k))
        return self._scores[kind]


def _ranks(scores: np.ndarray) -> np.ndarray:
    """Each score's rank among ``scores``: 0 for the lowest, n - 1 for the highest (ties by position)."""
    r = np.empty(len(scores), dtype=np.int64)
    r[np.argsort(scores, kind="stable")] = np.arange(len(scores), dtype=np.int64)
    return r


def ranking_order(policy: str, n_docs: int, seed: int, sim: np.ndarray | None = None,
                  doc_vecs: np.ndarray | None = None, ref_vecs: np.ndarray | None = None,
                  doc_texts: Callable[[], Sequence[str]] | None = None, ref_texts: Sequence[str] | None = None,
                  n: int | None = None, cache: dict | None = None) -> np.ndarray:
    """The documents a ranking strategy extracts, in order (the first ``n``; all for ``full``).

    ``cache`` (a dict) keeps the seed-independent scores (TSDS probabilities, DSIR weights, the classifier's
    scores) between calls on the same corpus and reference."""
    cache = {} if cache is None else cache
    n = n_docs if n is None else min(n, n_docs)
    if policy == "full":
        return np.arange(n_docs, dtype=np.int64)
    if policy == "random":
        return np.random.default_rng([seed, 0x4A4D]).permutation(n_docs)[:n].astype(np.int64)
    if policy == "avg-sim":
        return np.argsort(-np.asarray(sim), kind="stable")[:n].astype(np.int64)
    if policy == "classifier":
        s = cache.get("classifier")
        if s is None:
            s = cache["classifier"] = similarity_scores(doc_vecs, ref_vecs, "classifier")
        return np.argsort(-s, kind="stable")[:n].astype(np.int64)
    if policy == "tsds":
        from .tsds import tsds_order, tsds_probabilities

        p = cache.get("tsds")
        if p is None:
            p = cache["tsds"] = tsds_probabilities(doc_vecs, ref_vecs)
        return np.asarray(tsds_order(p, n, np.random.default_rng([seed, 0x75D5])), dtype=np.int64)
    if policy == "dsir":
        from .dsir import dsir_log_weights, dsir_order

        w = cache.get("dsir")
        if w is None:
            w = cache["dsir"] = dsir_log_weights(doc_texts(), ref_texts)
        return np.asarray(dsir_order(w, n, np.random.default_rng([seed, 0xD512])), dtype=np.int64)
    raise ValueError(f"not a ranking strategy: {policy}")


# ------------------------------------------------------------------ warm-up
def warmup_rows(n_docs: int, n_warmup: int, seed: int, sampling: str = "random",
                sim: np.ndarray | None = None, pool_factor: float = 3.0) -> np.ndarray:
    """The warm-up documents, in extraction order.

    ``random``: a seeded uniform sample (the paper). ``targeted``: a seeded
    uniform sample of the ``pool_factor * n_warmup`` documents most similar to
    the reference, so the warm-up is mostly on target yet still varied.
    """
    n_warmup = min(n_docs, n_warmup)
    rng = np.random.default_rng([seed, 0xA11])
    if n_warmup == 0:
        return np.zeros(0, dtype=np.int64)
    if sampling == "random" or sim is None:
        return rng.permutation(n_docs)[:n_warmup].astype(np.int64)
    pool = np.argsort(-sim, kind="stable")[: min(n_docs, max(n_warmup, int(pool_factor * n_warmup)))]
    return pool[rng.permutation(len(pool))[:n_warmup]].astype(np.int64)


# ------------------------------------------------------------------ arms
def arm_members(labels: np.ndarray, k: int, exclude: np.ndarray, seed: int, order: str = "random",
                sim: np.ndarray | None = None) -> Members:
    """Per arm, its documents in the order pulls take them, without the ``exclude``d rows.

    ``order="random"``: a seeded shuffle (the paper); ``"similarity"``: most similar to the reference first.
    """
    n = len(labels)
    keep = np.ones(n, dtype=bool)
    keep[exclude] = False
    if order == "similarity" and sim is not None:
        perm = np.argsort(-np.asarray(sim), kind="stable")
    else:
        perm = np.random.default_rng([seed, 0xC1]).permutation(n)
    return Members.from_labels(labels, k, perm[keep[perm]])  # two arrays, not k


@dataclass
class WarmupArms:
    """What the warm-up says about each arm: documents seen and the mean reward of their pairs."""

    docs: np.ndarray  # (k,) warm-up documents per arm
    reward: np.ndarray  # (k,) reward of the arm's warm-up pairs (nan: none seen)
    pseudo_pulls: np.ndarray  # (k,)


def warmup_arm_rewards(labels: np.ndarray, k: int, warm_rows: np.ndarray, pair_rows: np.ndarray,
                       pair_vecs: np.ndarray, reward_of: Callable[[np.ndarray], float],
                       docs_per_pull: int) -> WarmupArms:
    """Reward each arm's warm-up pairs as one batch; one pseudo-pull per ``docs_per_pull`` warm-up documents."""
    docs = np.bincount(labels[warm_rows], minlength=k) if len(warm_rows) else np.zeros(k, np.int64)
    pair_arm = labels[pair_rows] if len(pair_rows) else np.zeros(0, dtype=labels.dtype)
    reward = np.full(k, np.nan)
    pulls = np.zeros(k, dtype=np.int64)
    for j in np.flatnonzero(docs):
        reward[j] = reward_of(pair_vecs[pair_arm == j])
        pulls[j] = max(1, int(round(docs[j] / docs_per_pull)))
    return WarmupArms(docs=docs, reward=reward, pseudo_pulls=pulls)


def arm_prior(members: list[np.ndarray], sim: np.ndarray, warm: WarmupArms | None, labels: np.ndarray,
              warm_rows: np.ndarray, docs_per_pull: int) -> np.ndarray:
    """A zero-cost prior mean per arm, on the reward's scale.

    An arm's score is the mean similarity to the reference of the documents its
    next pull would take. Where the warm-up rewarded some arms, the scores are
    mapped onto rewards by a least-squares line through those arms (weighted by
    their warm-up documents); otherwise the score itself is the prior.
    """
    k = len(members)
    nxt = np.array([float(np.mean(sim[m[:docs_per_pull]])) if len(m) else np.nan for m in members])
    if warm is None:
        return np.nan_to_num(nxt, nan=float(np.nanmin(nxt)) if np.isfinite(nxt).any() else 0.0)
    seen = np.flatnonzero(np.isfinite(warm.reward))
    x = np.array([float(np.mean(sim[warm_rows[labels[warm_rows] == j]])) for j in seen])
    y = warm.reward[seen]
    w = warm.docs[seen].astype(np.float64)
    a, b = 0.0, 1.0
    if len(seen) >= 3 and np.ptp(x) > 1e-6:
        X = np.stack([np.ones_like(x), x], axis=1) * np.sqrt(w)[:, None]
        coef, *_ = np.linalg.lstsq(X, y * np.sqrt(w), rcond=None)
        if coef[1] > 0:
            a, b = float(coef[0]), float(coef[1])
        else:
            a, b = float(np.average(y, weights=w)) - float(np.average(x, weights=w)), 1.0
    out = a + b * nxt
    fill = float(np.nanmin(out)) if np.isfinite(out).any() else 0.0
    return np.nan_to_num(out, nan=fill)[:k]
