"""``equal run`` (and ``--dry-run``) and ``equal config``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..config import Config
from ..errors import EqualError
from .flags import add_run_flags


def add_parsers(sub) -> None:
    p_run = sub.add_parser("run", help="Run (or resume) the pipeline into a run folder.",
                           description="Run EQUAL end to end. Running again with the same --out resumes.")
    add_run_flags(p_run, Config)
    p_run.add_argument("--restart", action="store_true", help="Discard what is in --out and start over.")
    p_run.add_argument("--quiet", "-q", action="store_true", help="No progress bars.")
    p_run.add_argument("--json", action="store_true", help="Print the final summary (with --dry-run: the "
                       "estimate) as one JSON object on stdout and nothing else (progress and messages go to stderr).")
    p_run.add_argument("--dry-run", action="store_true",
                       help="Estimate the run's extraction calls, prompt and completion tokens and cost from the "
                       "corpus and budget; sends no request and writes no run folder.")
    p_run.add_argument("--decontaminate", action="append", metavar="PATH",
                       help="Evaluation set (JSONL) to decontaminate against, added to hygiene.decontaminate "
                       "(repeatable).")

    p_run.set_defaults(handler=cmd_run, needs_config=True)

    p_cfg = sub.add_parser("config", help="Print the effective config (defaults, YAML file and flags merged).")
    add_run_flags(p_cfg, Config)
    p_cfg.add_argument("--show", action="store_true", help="Print the effective config as commented YAML (default).")
    p_cfg.set_defaults(handler=cmd_config, needs_config=True)


def cmd_config(cfg: Config, args: argparse.Namespace) -> int:  # noqa: ARG001
    sys.stdout.write(cfg.to_yaml(comments=True))
    return 0


def cmd_dry_run(cfg: Config, args: argparse.Namespace) -> int:
    import json

    from ..estimate import estimate, format_estimate

    if not cfg.corpus:
        print("equal: error: missing --corpus (or set it in --config)", file=sys.stderr)
        return 2
    est = estimate(cfg, restart=args.restart)
    sys.stdout.write(json.dumps(est) + "\n" if args.json else format_estimate(est))
    return 0


def cmd_run(cfg: Config, args: argparse.Namespace) -> int:
    from ..run import run

    if args.dry_run:
        return cmd_dry_run(cfg, args)
    missing = [name for name in ("corpus", "reference") if not getattr(cfg, name)]
    if missing:
        print(f"equal: error: missing {' and '.join('--' + m for m in missing)} (or set it in --config)", file=sys.stderr)
        return 2
    absent = [p for p in cfg.hygiene.decontaminate if not Path(p).is_file()]
    if absent:
        print(f"equal: error: evaluation set not found: {absent[0]} (hygiene.decontaminate)", file=sys.stderr)
        return 2
    # status lines go to stderr as they are, or as log records once the log level shows INFO
    messages = logging.getLogger("equal").getEffectiveLevel() > logging.INFO
    try:
        result = run(cfg, progress=not args.quiet, restart=args.restart, messages=messages)
    except EqualError:
        raise
    except OSError as e:
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""  # a write to an open file names none
        print(f"equal: error: {e.strerror or e}{where}; progress so far is saved", file=sys.stderr)
        return 1
    s = result.summary
    out = Path(cfg.out)
    if args.json:
        import json

        sys.stdout.write(json.dumps({"run_dir": str(out), "already_finished": result.already_finished, **s},
                                    default=str) + "\n")
        return 0
    if result.already_finished:
        return 0
    from ..progress import summary_table

    summary_table(s, sys.stdout)
    print(f"dataset: {out / 'dataset.jsonl'} ({s['pairs']} pairs from {s['docs_extracted']} of {s['docs_total']} documents)")
    print(f"rounds:  {out / 'rounds.jsonl'} ({s['rounds']} rounds)")
    if (out / "report.md").exists():
        print(f"report:  {out / 'report.md'}" + (f" and {out / 'report.html'}" if (out / "report.html").exists() else ""))
    h = s.get("hygiene") or {}
    if "kept" in h:
        print(f"hygiene: {h['kept']} of {h['pairs']} pairs pass ({h['contaminated']} contaminated, "
              f"{h.get('low_quality', 0)} by quality rules, {h['exact_duplicate']} exact and {h['near_duplicate']} "
              f"near duplicates; {out / h['report']})")
    print(f"summary: {out / 'summary.json'} (final OT distance to the reference: "
          f"{s['final_ot']:.4f})" if s["final_ot"] is not None else f"summary: {out / 'summary.json'}")
    return 0
