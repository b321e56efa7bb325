"""Which features the `classifier` ranking should use: embeddings or hashed word n-grams (fastText style).

Positives: the reference's prior sample (the items a run ranks with, drawn from the run part of compare's
split); negatives: the classifier's fixed seeded sample of corpus documents. For each feature set and a few
regularisation strengths, the on-target share (the corpus's ``domain`` label, evaluation only) of the top 5%
and 10% of the corpus by the classifier's score, with avg-sim (mean cosine) beside it.

    python bench/classifier_features.py --target math   # and --target code
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from equal.config import Config
from equal.corpus import Corpus
from equal.embed import from_config
from equal.evaluate import labels_by_id
from equal.experiments.compare import split_reference
from equal.reference import load_reference
from equal.select import recipe
from equal.select.classifier import classifier_scores, negative_rows
from equal.vectors import cache_root, embed_corpus, reference_vectors


def ngram_scores(doc_texts, pos_texts, neg_rows, c: float) -> np.ndarray:
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.linear_model import LogisticRegression

    hv = HashingVectorizer(ngram_range=(1, 2), n_features=2 ** 20, alternate_sign=False, norm="l2",
                           lowercase=True)
    D, P = hv.transform(doc_texts), hv.transform(pos_texts)
    from scipy.sparse import vstack

    X = vstack([D[neg_rows], P])
    y = np.r_[np.zeros(len(neg_rows)), np.ones(P.shape[0])]
    clf = LogisticRegression(C=c, max_iter=5000, class_weight="balanced", solver="liblinear").fit(X, y)
    return clf.decision_function(D)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", required=True, help="math or code (reference_<target>.jsonl, label value)")
    ap.add_argument("--data", default=os.environ.get("EQUAL_SHARED_DATA", "../shared/data"))
    ap.add_argument("--work", default="runs/classifier-features")
    ap.add_argument("--eval-size", type=int, default=200)
    args = ap.parse_args()
    t = args.target
    work = Path(args.work) / t
    cfg = Config().replace(corpus=f"{args.data}/corpus.jsonl", reference=f"{args.data}/reference_{t}.jsonl")
    corpus = Corpus(cfg.corpus, cfg.corpus_options, index_dir=work / "index", progress=False)
    emb = from_config(cfg.embed, cache_root(cfg), False)
    base = embed_corpus(corpus, emb, work / "doc_vectors.npy", cfg, progress=False)
    ref = load_reference(cfg.reference)
    run_rows, _ = split_reference(len(ref.pairs), args.eval_size)
    run_pairs = [ref.pairs[int(i)] for i in run_rows]
    _, prior = reference_vectors(emb.encode, run_pairs, cfg, only="prior")
    p_rows = recipe.prior_sample(len(run_pairs), cfg.score.prior_sample)
    pos_texts = [run_pairs[int(i)].text() for i in p_rows]
    docs = [d for b in corpus.iter_batches(4096) for d in b]
    lab = labels_by_id(Path(cfg.corpus), "domain", cfg.corpus_options.id_field)
    on = np.array([lab.get(d.id) == t for d in docs])
    n = len(docs)

    def share(scores, frac):
        top = np.argsort(-np.asarray(scores), kind="stable")[: int(round(frac * n))]
        return float(on[top].mean())

    rows = [("avg-sim (mean cosine)", recipe.similarity_scores(base, prior), 0.0)]
    for c in (0.01, 0.03, 0.1, 1.0):
        t0 = time.perf_counter()
        s = classifier_scores(base, prior, c=c)
        rows.append((f"classifier, embeddings, C={c}", s, time.perf_counter() - t0))
    neg = negative_rows(n, len(prior))
    texts = [d.text for d in docs]
    for c in (1.0, 10.0):
        t0 = time.perf_counter()
        s = ngram_scores(texts, pos_texts, neg, c)
        rows.append((f"classifier, hashed 1-2-grams, C={c}", s, time.perf_counter() - t0))
    print(f"target {t}: {n} documents, {on.mean():.3f} on target, {len(prior)} positives, {len(neg)} negatives")
    print(f"| score ({t}) | top 5% on target | top 10% on target | fit+score s |\n|---|---|---|---|")
    for name, s, dt in rows:
        print(f"| {name} | {share(s, 0.05):.3f} | {share(s, 0.10):.3f} | {dt:.1f} |")


if __name__ == "__main__":
    main()
