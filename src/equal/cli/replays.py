"""``equal extract-all`` (an extraction table) and ``equal compare`` (replays against it)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..config import Config
from ..errors import EqualError
from .flags import add_run_flags


def add_parsers(sub) -> None:
    p_all = sub.add_parser("extract-all", help="Extract every document once into an extraction table (for replays).",
                           description="Extract every document of the corpus once (resumable, through the "
                           "extraction cache) into a table of pairs and their vectors, for `equal compare`.")
    add_run_flags(p_all, Config)
    p_all.add_argument("--quiet", "-q", action="store_true", help="No progress bars.")

    p_all.set_defaults(handler=cmd_extract_all, needs_config=True)

    p_cmp = sub.add_parser("compare", help="Replay selection strategies against an extraction table (no LLM calls).",
                           description="Run every policy at every budget and seed against the same extraction "
                           "table and write results.csv, results.md and plots into --out.")
    add_run_flags(p_cmp, Config)
    p_cmp.add_argument("--table", required=True, help="An extraction table folder (from `equal extract-all`).")
    p_cmp.add_argument("--policies", default="equal,avg-sim,random",
                       help="Comma-separated strategies (default: equal,avg-sim,random; 'all' for every one).")
    p_cmp.add_argument("--budgets", default="0.05,0.1", help="Comma-separated budgets (fractions or counts).")
    p_cmp.add_argument("--seeds", type=int, default=5, help="Seeds 0..N-1 per policy and budget.")
    p_cmp.add_argument("--label-field", help="A corpus field holding a label (read by compare only, never by "
                       "selection), for the on-target metric.")
    p_cmp.add_argument("--target", help="The label value that counts as on target.")
    p_cmp.add_argument("--eval-size", type=int, default=500,
                       help="Reference items held out for evaluation (at most half the reference).")
    p_cmp.add_argument("--quiet", "-q", action="store_true", help="No progress bars.")

    p_cmp.set_defaults(handler=cmd_compare, needs_config=True)


def cmd_extract_all(cfg: Config, args: argparse.Namespace) -> int:
    from ..experiments.table import extract_all
    from ..extract.base import EndpointDown, SpendCapReached
    from ..layout import FolderLock

    if not cfg.corpus or not args.out:
        print("equal: error: extract-all needs --corpus and --out (the table folder)", file=sys.stderr)
        return 2
    try:
        with FolderLock(args.out, "table folder"):
            out = extract_all(cfg, args.out, progress=not args.quiet, say=lambda m: print(m, file=sys.stderr))
    except EndpointDown as e:
        print(f"equal: error: {e} — run the same command again to resume", file=sys.stderr)
        return 2
    except SpendCapReached as e:
        print(f"equal: stopped: {e} (the cap counts this process's requests); raise it and run the same "
              "command again to resume", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("equal: interrupted; the table is saved up to its last batch. Resume with the same command.",
              file=sys.stderr)
        return 130
    print(f"table: {out}")
    return 0


def cmd_compare(cfg: Config, args: argparse.Namespace) -> int:
    from ..experiments.compare import compare

    missing = [n for n in ("corpus", "reference") if not getattr(cfg, n)]
    if missing or not args.out:
        print("equal: error: compare needs --corpus, --reference, --table and --out", file=sys.stderr)
        return 2
    try:
        budgets = [float(b) for b in args.budgets.split(",") if b.strip()]
        policies = [p.strip() for p in args.policies.split(",") if p.strip()]
        out = compare(cfg, args.table, policies, budgets, args.seeds, args.out, label_field=args.label_field,
                      target=args.target, eval_size=args.eval_size, progress=not args.quiet)
    except ValueError as e:
        if isinstance(e, EqualError):
            raise
        print(f"equal: error: {e}", file=sys.stderr)
        return 2
    print(f"results: {out / 'results.md'}")
    return 0
