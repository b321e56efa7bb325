"""What the static embedder gives up against MiniLM: the same `equal run` with each, judged by MiniLM.

For each target (math, code) and embedder (the shipped MiniLM, `static`), runs `equal run` on the shared
corpus (heuristic extractor, budget 10 %, the given seeds), then measures, with the *MiniLM* embedder for
both runs (so the two are on one scale, and neither is judged by the embedder it selected with):

* on target: the share of extracted documents (warm-up and rounds) whose `domain` label is the target
  (the label is read here only, never by the run);
* OT: exact EMD, cosine cost, between the run's pairs (at most --judge-pairs, sampled) and a seeded sample
  of --judge-ref reference items (all of them for code).

Also reports the embedding stage's time. Runs with a warm-up (align.warmup_fraction 0.5) so that the
adapter alignment runs too, and without (the shipped default).

    python bench/static_quality.py [--seeds 0] [--targets math,code] [--out runs/static_quality]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EQUAL_SHARED_DATA", ROOT.parent / "shared" / "data"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--targets", default="math,code")
    ap.add_argument("--budget", type=float, default=0.1)
    ap.add_argument("--warmup", default="0,0.5", help="align.warmup_fraction values to run")
    ap.add_argument("--judge-ref", type=int, default=1000, help="reference items (sampled) the judge OT uses")
    ap.add_argument("--judge-pairs", type=int, default=1000, help="at most this many of a run's pairs (sampled)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "static_quality"))
    args = ap.parse_args()

    from equal import Config, run
    from equal.embed import Embedder
    from equal.evaluate import labels_by_id
    from equal.io import read_jsonl
    from equal.reference import load_reference
    from equal.score import ot_distance
    from equal.types import QAPair

    corpus = DATA / "corpus.jsonl"
    labels = labels_by_id(corpus, "domain")
    judge = Embedder()  # MiniLM
    out_root = Path(args.out)
    rows = []
    for target in args.targets.split(","):
        ref_path = DATA / f"reference_{target}.jsonl"
        pairs = load_reference(ref_path).pairs
        rng = np.random.default_rng(0xE5A1)
        pick = np.sort(rng.choice(len(pairs), min(args.judge_ref, len(pairs)), replace=False))
        ref_vecs = judge.encode([pairs[int(i)].text() for i in pick])
        for warm in [float(w) for w in args.warmup.split(",")]:
            for seed in [int(s) for s in args.seeds.split(",")]:
                for emb in ("all-MiniLM-L6-v2", "static"):
                    out = out_root / f"{target}-w{warm}-s{seed}-{emb.split('-')[0].lower()}"
                    cfg = Config(corpus=str(corpus), reference=str(ref_path), out=str(out), budget=args.budget,
                                 seed=seed).replace(**{"embed.model": emb, "align.warmup_fraction": warm,
                                                       "report": False})
                    t = time.perf_counter()
                    res = run(cfg, progress=False, messages=False)
                    wall = time.perf_counter() - t
                    ids = [r["doc_id"] for r in read_jsonl(out / "extracted.jsonl")]
                    on = float(np.mean([labels.get(i) == target for i in ids]))
                    ds = list(read_jsonl(out / "dataset.jsonl"))
                    texts = [QAPair(r["question"], r["answer"]).text() for r in ds]
                    if len(texts) > args.judge_pairs:
                        texts = [texts[int(i)] for i in np.sort(np.random.default_rng(seed).choice(
                            len(texts), args.judge_pairs, replace=False))]
                    ot = ot_distance(judge.encode(texts), ref_vecs, "cosine", "emd") if texts else float("nan")
                    s = res.summary
                    row = {"target": target, "warmup": warm, "seed": seed, "embedder": emb,
                           "docs": len(ids), "pairs": len(ds), "on_target": round(on, 4), "ot_minilm": round(ot, 4),
                           "ot_own": round(s["final_ot"], 4) if s.get("final_ot") is not None else None,
                           "embed_s": s["stage_seconds"].get("embed"),
                           "load_embedder_s": s["stage_seconds"].get("load_embedder"),
                           "wall_s": round(wall, 1), "align": s.get("align", {})}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    out_root.mkdir(parents=True, exist_ok=True)
    (out_root / "results.json").write_text(json.dumps(rows, indent=1))
    print("\n| target | warm-up | embedder | on target | OT (MiniLM judge) | embed s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['target']} | {r['warmup']} | {r['embedder']} | {r['on_target']:.3f} | {r['ot_minilm']:.4f} | "
              f"{r['embed_s']} |")


if __name__ == "__main__":
    main()
