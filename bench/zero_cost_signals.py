"""Zero-cost document scores against the held-out reference: which ranking gives what (no bandit, no LLM).

For each score, the top 5% / 10% of the corpus by that score are "extracted" from the extraction table
and measured as `equal compare` measures a policy (OT to the held-out reference, on-target share).
Scores: mean cosine to the reference (avg-sim / RDS+), kNN-k cosine, a logistic-regression classifier
(reference pairs vs corpus documents, sklearn, balanced), mean cosine to the reference's questions only
and to its answers only, and z-scored sums of them.

    python bench/zero_cost_signals.py --table TABLE --target math   # and --target code
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from equal.cluster import kmeans
from equal.config import Config
from equal.embed import make_embedder
from equal.experiments import compare as C
from equal.select import recipe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--table", required=True)
    ap.add_argument("--target", required=True, help="math or code (reference_<target>.jsonl, label value)")
    ap.add_argument("--data", default=os.environ.get("EQUAL_SHARED_DATA", "../shared/data"))
    ap.add_argument("--work", default="runs/zero-cost")
    args = ap.parse_args()
    t = args.target
    cfg = Config().replace(corpus=f"{args.data}/corpus.jsonl", reference=f"{args.data}/reference_{t}.jsonl")
    ctx, eval_vecs = C.build_context(cfg, args.table, Path(args.work) / t, 500, False)
    labels = C._labels(ctx.corpus, cfg, "domain")
    ctx.reward_vectors(cfg)
    eval_labels = kmeans(ctx.base, int(round(np.sqrt(ctx.n))), 20, 0).labels
    base, P = np.asarray(ctx.base), ctx.prior_vecs
    pairs = [ctx.run_pairs[int(i)] for i in recipe.prior_sample(len(ctx.run_pairs), cfg.score.prior_sample)]
    emb = make_embedder(cfg.embed.model, cfg.embed.batch_size, cfg.embed.max_seq_length, cfg.embed.device)
    A, Q = emb.encode([p.answer for p in pairs]), emb.encode([p.question for p in pairs])

    def z(x):
        return (x - x.mean()) / x.std()

    from sklearn.linear_model import LogisticRegression

    X, y = np.concatenate([base, P]), np.r_[np.zeros(len(base)), np.ones(len(P))]
    clf = LogisticRegression(C=0.03, max_iter=2000, class_weight="balanced").fit(X, y)
    s = {"mean (avg-sim)": ctx.sim,
         "kNN-100": recipe.similarity_scores(base, P, "knn", 100),
         "classifier": base @ clf.coef_[0],
         "questions only": base @ Q.mean(0),
         "answers only": base @ A.mean(0)}
    s["classifier + kNN-100"] = z(s["classifier"]) + z(s["kNN-100"])
    s["answers + mean + kNN-100"] = z(s["answers only"]) + z(s["mean (avg-sim)"]) + z(s["kNN-100"])
    print(f"| score ({t}) | 5%: OT / on target | 10%: OT / on target |\n|---|---|---|")
    for name, score in s.items():
        cells = []
        for b in (0.05, 0.1):
            rows = np.argsort(-score, kind="stable")[: int(round(b * ctx.n))]
            rep = C.Replay(rows=rows, warmup=0, vectors=ctx.table.vectors_of(ctx.rows_to_table[rows]), rounds=[])
            r = C.evaluate(rep, ctx, eval_vecs, eval_labels, labels, t, 0)
            cells.append(f"{r['ot']:.4f} / {r['on_target']:.3f}")
        print(f"| {name} | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    main()
