"""Which proxy predicts what the downstream judge measures? Content (OT, on-target share) against form.

For every trained cell of a `bench/downstream.py` grid, the pairs that cell trained on are rebuilt exactly
(the same replay, hygiene, `+plain` rewrite and seeded sample) and scored with proxies of *form*: how close
the answers' hashed n-grams are to the reference answers' (the run split only; the evaluation split that the
judge scores is never read). Symbols count as words here (``$``, ``\\``, ``{``, ``=``, ``#``), since LaTeX
against plain prose is the difference the `+plain` check found. The proxies, per cell:

- ``ngram_ratio``: DSIR's log importance weight per n-gram of the trained answers, mean over n-grams:
  log p_ref(b) - log p_raw(b), with p_ref fitted on the reference answers and p_raw on every answer of the
  extraction table (both Laplace-smoothed; unigrams and bigrams, 10,000 buckets). Higher: more like the
  reference in form.
- ``ngram_xent``: the trained answers' cross-entropy per n-gram under p_ref. Lower: more like the reference.

Spearman's rho (and Pearson's r) of each proxy, of the cells' OT, on-target share and style, and of the number
of distinct pairs trained on (a selection with fewer kept pairs than steps x batch repeats them), against the NLL
across all trained cells (policies x budgets x seeds; the oracle cells are reported apart). A proxy that
predicts the judge has rho < 0 for ``ngram_ratio`` (higher weight, lower NLL) and rho > 0 for the others.

    python bench/form_proxy.py --grid runs/downstream/B-math --corpus runs/halves/B.jsonl \\
        --reference ../shared/data/reference_math.jsonl --table runs/table-B --out runs/form/B-math

Writes OUT/form.md, OUT/form.json and OUT/answers/ (each cell's trained answers; a rerun replays only new
cells). Replays are not trained, so a grid of 30 cells takes a few minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import downstream as D  # noqa: E402

_SYM = re.compile(r"([^\w\s])")


def symbol_words(text: str) -> str:
    """Each symbol as a word of its own (``$`` -> `` s36 ``), so that hashed word n-grams see LaTeX and
    markup as well as words."""
    return _SYM.sub(lambda m: f" s{ord(m.group(1))} ", text)


def form_proxies(answers: list[str], ref_answers: list[str], raw_answers: list[str],
                 num_buckets: int = 10_000, ngrams: int = 2) -> dict[str, float]:
    """``ngram_ratio`` and ``ngram_xent`` of ``answers`` (see the module docstring)."""
    from equal.select.dsir import fit_ngram_model, hashed_ngram_counts

    def counts(texts):
        return hashed_ngram_counts([symbol_words(t) for t in texts], num_buckets, ngrams)

    p_ref = fit_ngram_model(counts(ref_answers))
    p_raw = fit_ngram_model(counts(raw_answers))
    c = np.asarray(counts(answers).sum(axis=0)).ravel().astype(np.float64)
    n = max(c.sum(), 1.0)
    return {"ngram_ratio": float(c @ (p_ref - p_raw) / n), "ngram_xent": float(-(c @ p_ref) / n)}


def _rank_stats(x, y) -> tuple[float, float]:
    from scipy.stats import pearsonr, spearmanr

    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan"), float("nan")
    return float(spearmanr(x, y).statistic), float(pearsonr(x, y).statistic)


def trained_answers(rec: dict, cfg, ctx, judge_n: int, run_pairs, hygiene: bool) -> list[str]:
    """The answers a cell trained on, rebuilt by `bench/downstream.py`'s own call."""
    if rec["policy"] == "oracle":
        return [a for _, a in D.sample_pairs(run_pairs, judge_n, int(rec["seed"]))]
    kept = D.cell_pairs(cfg, ctx, rec["policy"], rec["budget"], int(rec["seed"]), hygiene)[3]
    return [a for _, a in D.sample_pairs(kept, judge_n, int(rec["seed"]))]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grid", required=True, help="a bench/downstream.py output folder (its cells/)")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--reference", required=True)
    ap.add_argument("--table", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--eval-size", type=int, default=100, help="as the grid was run (compare's split)")
    ap.add_argument("--no-hygiene", dest="hygiene", action="store_false")
    args = ap.parse_args(argv)

    from equal.config import Config
    from equal.experiments import compare as C

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cells = sorted((Path(args.grid) / "cells").glob("*.json"))
    recs = [json.loads(p.read_text()) for p in cells]
    recs = [r for r in recs if r.get("policy") not in (None, "base") and "nll" in r]
    if not recs:
        sys.exit(f"no trained cells in {args.grid}/cells")
    train = recs[0]["setup"]["train"]
    judge_n = int(train["max_steps"]) * int(train["batch_size"])
    cfg = Config(corpus=args.corpus, reference=args.reference, out=str(out / "unused"))
    ctx, _ = C.build_context(cfg, args.table, out / "ctx", args.eval_size, False)
    run_pairs = [(p.question, p.answer) for p in ctx.run_pairs]
    ref_answers = [a for _, a in run_pairs]
    raw_answers = [p.answer for r in ctx.rows_to_table for p in ctx.table.pairs_of(int(r))]
    rows = []
    kept = out / "answers"  # each cell's trained answers, so that a rerun replays only new cells
    kept.mkdir(exist_ok=True)
    for rec in recs:
        path = kept / D.cell_name(rec["policy"], rec.get("budget"), rec.get("seed"))
        if path.is_file():
            answers = json.loads(path.read_text())
        else:
            answers = trained_answers(rec, cfg, ctx, judge_n, run_pairs, args.hygiene)
            path.write_text(json.dumps(answers) + "\n")
        row = {"policy": rec["policy"], "budget": rec.get("budget"), "seed": rec.get("seed"), "nll": rec["nll"],
               "ot": rec.get("ot"), "on_target": rec.get("on_target"), "trained": len(answers),
               "latex_share": rec.get("style", {}).get("latex_share"),
               "answer_words": rec.get("style", {}).get("answer_words"),
               **form_proxies(answers, ref_answers, raw_answers)}
        rows.append(row)
        print(f"{row['policy'][:40]} {row['budget']} s{row['seed']}: NLL {row['nll']:.4f} "
              f"ratio {row['ngram_ratio']:+.3f} xent {row['ngram_xent']:.3f}", flush=True)

    sel = [r for r in rows if r["policy"] != "oracle"]
    proxies = ["ngram_ratio", "ngram_xent", "ot", "on_target", "latex_share", "answer_words", "trained"]
    stats = {}
    for p in proxies:
        xs = [(r[p], r["nll"]) for r in sel if r[p] is not None and not (isinstance(r[p], float) and math.isnan(r[p]))]
        rho, r = _rank_stats([x for x, _ in xs], [y for _, y in xs]) if xs else (float("nan"),) * 2
        # within seed: each cell's NLL and proxy less its seed's means over the selection cells, which takes out
        # what the training seed moves in every policy alike (the judge's largest noise)
        ok = [r for r in sel if r[p] is not None and not (isinstance(r[p], float) and math.isnan(r[p]))]
        mean_by_seed = {s: (np.mean([r["nll"] for r in ok if r["seed"] == s]),
                            np.mean([r[p] for r in ok if r["seed"] == s])) for s in {r["seed"] for r in ok}}
        rho_w, _ = _rank_stats([r[p] - mean_by_seed[r["seed"]][1] for r in ok],
                               [r["nll"] - mean_by_seed[r["seed"]][0] for r in ok]) if ok else (float("nan"),) * 2
        stats[p] = {"cells": len(xs), "spearman": rho, "pearson": r, "spearman_within_seed": rho_w}
    lines = [f"# Form against content: which proxy predicts the judge ({Path(args.grid).name})", "",
             f"{len(sel)} trained selection cells of `{args.grid}` (each: {judge_n} trained examples), rebuilt and "
             "scored; the oracle rows are listed but left out of the correlations.", "",
             "*Within seed*: each cell's NLL and proxy less the means of its seed's cells (the training seed moves "
             "every policy alike, and is the judge's largest noise).", "",
             "| proxy | cells | Spearman rho vs NLL | Pearson r vs NLL | rho within seed | a working proxy |",
             "|---|---|---|---|---|---|"]
    want = {"ngram_ratio": "rho < 0", "ngram_xent": "rho > 0", "ot": "rho > 0", "on_target": "rho < 0",
            "latex_share": "(style)", "answer_words": "(style)", "trained": "(distinct pairs trained on)"}
    for p in proxies:
        s = stats[p]
        lines.append(f"| {p} | {s['cells']} | {s['spearman']:+.2f} | {s['pearson']:+.2f} | "
                     f"{s['spearman_within_seed']:+.2f} | {want[p]} |")
    lines += ["", "| policy | budget | seed | NLL | ngram_ratio | ngram_xent | OT | on target | LaTeX |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r["nll"]):
        f = (lambda v, d: "" if v is None else f"{v:.{d}f}")
        lines.append(f"| {r['policy'][:60]} | {r['budget'] if r['budget'] is not None else '-'} | {r['seed']} | "
                     f"{r['nll']:.4f} | {r['ngram_ratio']:+.3f} | {r['ngram_xent']:.3f} | {f(r['ot'], 4)} | "
                     f"{f(r['on_target'], 3)} | {f(r['latex_share'], 2)} |")
    (out / "form.md").write_text("\n".join(lines) + "\n")
    (out / "form.json").write_text(json.dumps({"rows": rows, "stats": stats}, indent=2) + "\n")
    print("\n".join(lines[:12]))
    print(out / "form.md")


if __name__ == "__main__":
    main()
