"""Quick ablation sweep: replay config variants of `equal` against an extraction table, mean over seeds.

Prints one line per variant: OT to the held-out reference, on-target share (all calls and after the
warm-up), pairs, evaluation clusters covered, seconds per replay. Variants use `equal compare`'s
syntax, e.g. 'equal[bandit.prior=none;align.warmup_fraction=0.5]'.

    python bench/ablation_sweep.py --table TABLE --target math --budget 0.1 --seeds 0,1,2 VARIANT [VARIANT ...]
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EQUAL_SHARED_DATA", ROOT.parent / "shared" / "data"))


def main() -> None:
    from equal import Config
    from equal.cluster import kmeans
    from equal.evaluate import labels_by_id
    from equal.experiments.compare import build_context, evaluate, parse_spec, replay

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", required=True)
    ap.add_argument("--target", default="math")
    ap.add_argument("--budget", type=float, default=0.1)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default=str(ROOT / "runs" / "ablation"))
    ap.add_argument("variants", nargs="+")
    args = ap.parse_args()
    cfg = Config(corpus=str(DATA / "corpus.jsonl"), reference=str(DATA / f"reference_{args.target}.jsonl"),
                 budget=args.budget)
    ctx, ev = build_context(cfg, args.table, Path(args.out) / args.target, 500, progress=False)
    labels = labels_by_id(DATA / "corpus.jsonl", "domain")
    eval_labels = kmeans(ctx.base, int(round(math.sqrt(ctx.n))), 20, 0).labels
    for spec in args.variants:
        name, overrides = parse_spec(spec)
        rows = []
        for s in (int(x) for x in args.seeds.split(",")):
            c = cfg.replace(**{**overrides, "policy": name, "seed": s})
            t = time.perf_counter()
            rep = replay(c, ctx)
            r = evaluate(rep, ctx, ev, eval_labels, labels, args.target, s)
            r["sec"] = time.perf_counter() - t
            rows.append(r)

        def m(k):
            return float(np.mean([r[k] for r in rows]))
        print(f"{spec}: OT {m('ot'):.4f} on-target {m('on_target'):.3f} after-warm-up "
              f"{m('on_target_after_warmup'):.3f} pairs {m('pairs'):.0f} clusters {m('clusters'):.1f} "
              f"s/replay {m('sec'):.1f}", flush=True)


if __name__ == "__main__":
    main()
