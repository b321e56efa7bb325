"""int8 against fp32 vectors on the shared corpus: how much ``embed.backend: onnx-int8`` changes the embedding.

Embeds every document of the corpus with the shipped MiniLM twice, with the shipped embed settings, through
the pipeline's own corpus embedding (:func:`equal.vectors.embed_corpus`, so the shared embedding cache
serves a corpus already embedded by a run or a replay): ``--base`` (default torch fp32) and ``--backend``
(default onnx-int8). Prints, as JSON:

* the per-document cosine of the two vectors: mean, 1st percentile, minimum;
* the k-means agreement (adjusted Rand index, scikit-learn) of the two embeddings' clusterings at the
  shipped default k for the default budget (:class:`equal.sizing.Plan`), faiss k-means with the shipped
  cluster settings, seeds 0..``--seeds``-1, each seed on both; beside it, the agreement of the fp32
  clustering with itself across seeds (k-means' own variation, the yardstick).

    python bench/int8_quality.py [--corpus PATH] [--base torch] [--backend onnx-int8] [--seeds 3]
                                 [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EQUAL_SHARED_DATA", ROOT.parent / "shared" / "data"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=str(DATA / "corpus.jsonl"))
    ap.add_argument("--base", default="torch", help="the reference backend")
    ap.add_argument("--backend", default="onnx-int8", help="the backend compared with it")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--json", help="also write the result to this file")
    args = ap.parse_args()

    from sklearn.metrics import adjusted_rand_score

    from equal import Config
    from equal.cluster import kmeans
    from equal.corpus import Corpus
    from equal.embed import from_config
    from equal.sizing import Plan
    from equal.vectors import cache_root, embed_corpus

    tmp = Path(tempfile.mkdtemp(prefix="equal-int8-quality-"))
    corpus = Corpus(args.corpus, index_dir=tmp / "index", progress=False)
    vecs, seconds = {}, {}
    for backend in (args.base, args.backend):
        cfg = Config(corpus=args.corpus).replace(**{"embed.backend": backend})
        emb = from_config(cfg.embed, cache_root(cfg))
        t = time.perf_counter()
        vecs[backend] = np.asarray(embed_corpus(corpus, emb, tmp / f"{backend}.npy", cfg, progress=False))
        seconds[backend] = round(time.perf_counter() - t, 1)
    a, b = vecs[args.base], vecs[args.backend]
    cos = (a * b).sum(axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    cfg = Config(corpus=args.corpus)
    plan = Plan.make(cfg, len(corpus))
    c = cfg.cluster

    def labels(v, seed):
        return kmeans(v, plan.k, c.niter, seed, c.max_points_per_centroid, c.nredo).labels

    base_labels = [labels(a, s) for s in range(args.seeds)]
    other_labels = [labels(b, s) for s in range(args.seeds)]
    ari = [adjusted_rand_score(x, y) for x, y in zip(base_labels, other_labels)]
    ari_self = [adjusted_rand_score(base_labels[i], base_labels[j])
                for i in range(args.seeds) for j in range(i + 1, args.seeds)]
    out = {"corpus_docs": len(corpus), "base": args.base, "backend": args.backend,
           "embed_seconds": seconds, "cosine_mean": round(float(cos.mean()), 5),
           "cosine_p1": round(float(np.percentile(cos, 1)), 5), "cosine_min": round(float(cos.min()), 5),
           "k": plan.k, "seeds": args.seeds, "ari_same_seed": [round(x, 4) for x in ari],
           "ari_mean": round(float(np.mean(ari)), 4),
           "ari_base_across_seeds_mean": round(float(np.mean(ari_self)), 4) if ari_self else None}
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
