"""Selection quality on the shared corpus: how on-target are the documents the bandit extracts?

Runs ``equal`` with its shipped defaults (plus any --set overrides) on
../shared/data/corpus.jsonl for each reference and alignment mode asked, and
prints, per run, the fraction of bandit-extracted documents whose ``domain``
label is the target (the pipeline never reads that label), next to a random
pick of the same size measured in the same run, and the wall time.

    python bench/selection.py --target math --target code --align adapter --align none --align full
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from equal import Config, run
from equal.evaluate import bandit_doc_ids, label_mix, labels_by_id, on_target_fraction

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", action="append", choices=["math", "code"])
    ap.add_argument("--align", action="append", choices=["adapter", "full", "none"])
    ap.add_argument("--corpus", default=str(DATA / "corpus.jsonl"))
    ap.add_argument("--budget", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--json", help="Also write the rows to this JSON file.")
    args = ap.parse_args()
    import yaml

    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    labels = labels_by_id(args.corpus, "domain")
    all_ids = list(labels)
    rows = []
    for target in args.target or ["math"]:
        for mode in args.align or ["adapter"]:
            out = Path(args.out) / f"{target}-{mode}-s{args.seed}"
            cfg = Config(corpus=args.corpus, reference=str(DATA / f"reference_{target}.jsonl"), out=str(out),
                         budget=args.budget, seed=args.seed).replace(**{"align.mode": mode, **overrides})
            t = time.perf_counter()
            res = run(cfg, progress=False, restart=True)
            wall = time.perf_counter() - t
            ids = bandit_doc_ids(out)
            rng = np.random.default_rng(args.seed)
            rand = [all_ids[i] for i in rng.choice(len(all_ids), size=len(ids), replace=False)]
            row = {"target": target, "align": mode, "seed": args.seed, "bandit_docs": len(ids),
                   "on_target": on_target_fraction(ids, labels, target),
                   "random_on_target": on_target_fraction(rand, labels, target),
                   "mix": label_mix(ids, labels), "final_ot": res.summary["final_ot"],
                   "wall_seconds": round(wall, 1), "stage_seconds": res.summary["stage_seconds"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print(f"{'target':7} {'align':8} {'docs':>5} {'on-target':>9} {'random':>7} {'ratio':>6} {'final OT':>8} {'wall s':>7}")
    for r in rows:
        ratio = r["on_target"] / r["random_on_target"] if r["random_on_target"] else float("nan")
        print(f"{r['target']:7} {r['align']:8} {r['bandit_docs']:5d} {r['on_target']:9.3f} {r['random_on_target']:7.3f} "
              f"{ratio:6.2f} {r['final_ot']:8.4f} {r['wall_seconds']:7.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
