"""The ``classifier`` ranking: a linear classifier of "looks like the reference" (zero extraction cost).

In the style of MAmmoTH2's recall step and DCLM's fastText filter: the reference items are the positives, a
seeded random sample of corpus documents the negatives (unlabelled: a few of them are on target, which a
linear model with balanced class weights tolerates), and every document is scored by the classifier's
decision value. Features are the embeddings the run already has (documents and the reference's prior
sample, in the same space), chosen over hashed word n-grams by measurement (``bench/classifier_features.py``:
the on-target share of the top 10% on the shared corpus). The negative sample is fixed (seed-independent), so
the scores are computed once per corpus and reference and the same score serves the ranking and the
tracking prior's covariate (``bandit.prior_similarity: classifier``).
"""

from __future__ import annotations

import numpy as np

NEG_SEED = 0xC1A55
C = 0.1  # inverse regularisation strength (LogisticRegression's C), by the same measurement


def negative_rows(n_docs: int, n_pos: int, factor: float = 2.0, minimum: int = 2000) -> np.ndarray:
    """The corpus rows used as negatives: a fixed seeded sample of ``max(factor * n_pos, minimum)`` documents
    (all of them for a small corpus)."""
    m = int(min(n_docs, max(minimum, factor * n_pos)))
    return np.sort(np.random.default_rng(NEG_SEED).permutation(n_docs)[:m])


def fit_linear(pos: np.ndarray, neg: np.ndarray, c: float = C):
    """A balanced logistic regression of positives (1) against negatives (0): ``(w, b)``."""
    from sklearn.linear_model import LogisticRegression

    X = np.concatenate([np.asarray(neg, dtype=np.float64), np.asarray(pos, dtype=np.float64)])
    y = np.r_[np.zeros(len(neg)), np.ones(len(pos))]
    clf = LogisticRegression(C=c, max_iter=5000, class_weight="balanced").fit(X, y)
    return clf.coef_[0].astype(np.float32), np.float32(clf.intercept_[0])


def classifier_scores(doc_vecs: np.ndarray, ref_vecs: np.ndarray, c: float = C, chunk: int = 32_768) -> np.ndarray:
    """Each document's decision value (higher: more like the reference), read in row chunks (memmaps welcome).
    The reference vectors are the positives; :func:`negative_rows` of ``doc_vecs`` the negatives."""
    n = len(doc_vecs)
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    neg = np.asarray(doc_vecs[negative_rows(n, len(ref_vecs))], dtype=np.float32)
    w, b = fit_linear(np.asarray(ref_vecs, dtype=np.float32), neg, c)
    out = np.empty(n, dtype=np.float32)
    for s in range(0, n, chunk):
        block = np.asarray(doc_vecs[s: s + chunk], dtype=np.float32)
        out[s: s + len(block)] = block @ w + b
    return out
