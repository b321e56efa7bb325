"""The selection issue's check: `equal`'s shipped default against avg-sim (RDS+) at the same number of calls.

For each target and seed: the reference is split (the run gets one part, the
evaluation uses the other, as `equal compare` splits it); `equal`'s selection
is replayed against an extraction table (a replay picks exactly what a live
`equal run` picks, see tests/e2e/test_replay.py; `--live` runs `equal run` for
real instead); n = its number of extracted documents (warm-up included);
avg-sim = the n documents with the highest mean cosine (the same MiniLM) to
*every* reference item the run was given, and their pairs from the table
(what `equal run --budget 1.0` on those documents extracts, for a
deterministic extractor). OT = exact EMD, cosine cost, between the pairs
(at most 2,000, sampled) and the held-out items; on target = share of the
extracted documents whose label is the target.

    python bench/vs_avgsim.py --table TABLE [--targets math,code] [--seeds 0,1,2] [--budget 0.1] [--live]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EQUAL_SHARED_DATA", ROOT.parent / "shared" / "data"))


def main() -> None:
    import yaml

    from equal import Config, run
    from equal.evaluate import labels_by_id
    from equal.experiments.compare import EVAL_MAX_PAIRS, build_context, replay
    from equal.io import read_jsonl
    from equal.score import ot_distance

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", required=True)
    ap.add_argument("--corpus", default=str(DATA / "corpus.jsonl"))
    ap.add_argument("--targets", default="math,code")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--budget", type=float, default=0.1)
    ap.add_argument("--live", action="store_true", help="Run `equal run` for real instead of replaying.")
    ap.add_argument("--out", default=str(ROOT / "runs" / "vs_avgsim"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--json", help="Write the rows and the config to this file.")
    args = ap.parse_args()
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    labels = labels_by_id(args.corpus, "domain")
    rows = []
    for target in args.targets.split(","):
        base = Config(corpus=args.corpus, reference=str(DATA / f"reference_{target}.jsonl"),
                      budget=args.budget).replace(**overrides)
        out = Path(args.out) / target
        ctx, eval_vecs = build_context(base, args.table, out, 500, progress=False)
        run_ref = out / "reference_run.jsonl"
        from equal.select.recipe import similarity_scores

        all_ref = ctx.encode([p.text() for p in ctx.run_pairs])
        sim_all = similarity_scores(ctx.base, all_ref)
        for seed in [int(s) for s in args.seeds.split(",")]:
            cfg = base.replace(seed=seed)
            t = time.perf_counter()
            if args.live:
                live = cfg.replace(reference=str(run_ref), out=str(out / f"live-s{seed}"))
                run(live, progress=False, restart=True)
                ids = [e["doc_id"] for e in read_jsonl(out / f"live-s{seed}" / "extracted.jsonl")]
                rows_eq = ctx.table.rows_for(ids)
                n_warm = sum(1 for e in read_jsonl(out / f"live-s{seed}" / "extracted.jsonl") if e["round"] == 0)
            else:
                rep = replay(cfg, ctx)
                rows_eq = ctx.rows_to_table[rep.rows]
                n_warm = rep.warmup
            secs = time.perf_counter() - t
            n = len(rows_eq)
            top = ctx.rows_to_table[np.argsort(-sim_all, kind="stable")[:n]]

            def metrics(trows):
                vec = ctx.table.vectors_of(trows)
                if len(vec) > EVAL_MAX_PAIRS:
                    vec = vec[np.sort(np.random.default_rng([seed, 0xE7A]).choice(len(vec), EVAL_MAX_PAIRS,
                                                                                  replace=False))]
                ids = [ctx.table.doc_ids[int(r)] for r in trows]
                return (ot_distance(vec, eval_vecs, "cosine", "emd"),
                        float(np.mean([labels.get(i) == target for i in ids])), int(len(vec)))

            e_ot, e_on, e_pairs = metrics(rows_eq)
            a_ot, a_on, a_pairs = metrics(top)
            bandit_on = float(np.mean([labels.get(ctx.table.doc_ids[int(r)]) == target for r in rows_eq[n_warm:]])) \
                if n > n_warm else float("nan")
            row = {"target": target, "seed": seed, "calls": n, "warmup": n_warm,
                   "equal_ot": e_ot, "avgsim_ot": a_ot, "equal_on_target": e_on, "avgsim_on_target": a_on,
                   "equal_bandit_on_target": bandit_on, "equal_pairs": e_pairs, "avgsim_pairs": a_pairs,
                   "seconds": round(secs, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print(f"{'target':6} {'seed':>4} {'calls':>5} {'OT equal':>9} {'OT avgsim':>9} {'on eq':>6} {'on avg':>6} "
          f"{'bandit on':>9}")
    for r in rows:
        print(f"{r['target']:6} {r['seed']:4d} {r['calls']:5d} {r['equal_ot']:9.4f} {r['avgsim_ot']:9.4f} "
              f"{r['equal_on_target']:6.3f} {r['avgsim_on_target']:6.3f} {r['equal_bandit_on_target']:9.3f}")
    verdicts = []
    for target in args.targets.split(","):
        sel = [r for r in rows if r["target"] == target]
        m = {k: float(np.mean([r[k] for r in sel])) for k in ("equal_ot", "avgsim_ot", "equal_on_target",
                                                               "avgsim_on_target", "equal_bandit_on_target")}
        ok = m["equal_ot"] < m["avgsim_ot"] and m["equal_on_target"] >= m["avgsim_on_target"] - 0.02
        verdicts.append(ok)
        print(f"mean {target}: OT {m['equal_ot']:.4f} vs {m['avgsim_ot']:.4f} (ratio {m['equal_ot'] / m['avgsim_ot']:.3f}); "
              f"on target {m['equal_on_target']:.3f} vs {m['avgsim_on_target']:.3f}; bandit picks "
              f"{m['equal_bandit_on_target']:.3f} -> {'PASS' if ok else 'FAIL'}")
    if args.json:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=ROOT).stdout.strip()
        Path(args.json).write_text(json.dumps({"commit": commit, "argv": sys.argv[1:], "rows": rows,
                                               "config": base.to_dict()}, indent=2))


if __name__ == "__main__":
    main()
