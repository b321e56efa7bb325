"""Commands on a finished run folder: ``equal report``, ``equal export``, ``equal inspect``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..config import Config
from ..errors import EqualError


def add_parsers(sub) -> None:
    p_rep = sub.add_parser("report", help="(Re)write report.md, its PNG plots and report.html for a run folder.")
    p_rep.add_argument("run_dir", help="A run folder (the --out of `equal run`).")

    p_rep.set_defaults(handler=cmd_report)

    p_exp = sub.add_parser("export", help="Export a run's pairs (after hygiene) for a trainer, with a dataset card.",
                           description="Write the pairs of a finished run that pass hygiene (the run's config "
                           "plus --decontaminate) into --out as train (and validation) files and README.md.")
    p_exp.add_argument("run_dir", help="A finished run folder.")
    p_exp.add_argument("--format", required=True,
                       choices=["prompt-completion", "messages", "alpaca", "sharegpt", "parquet", "hf"],
                       help="prompt-completion (TRL's, the loss on the answer; what equal train reads), messages "
                       "(OpenAI/TRL JSONL), alpaca, sharegpt, parquet, or hf (save_to_disk folder). Each export "
                       "holds LLaMA-Factory's dataset_info.json and an axolotl.yaml block where they read it.")
    p_exp.add_argument("--out", required=True, help="Output folder (new, empty, or an earlier export).")
    p_exp.add_argument("--validation", type=float, help="Share of documents whose pairs form a validation split "
                       "(default export.validation_fraction, 0).")
    p_exp.add_argument("--seed", type=int, default=0, help="Seed of the train/validation split.")
    p_exp.add_argument("--decontaminate", action="append", metavar="PATH", default=[],
                       help="Evaluation set (JSONL) to decontaminate against, besides the run's (repeatable).")
    p_exp.add_argument("--no-hygiene", action="store_true", help="Export every pair of dataset.jsonl.")
    p_exp.add_argument("--license", help="Licence for the dataset card (default export.license).")

    p_exp.set_defaults(handler=cmd_export)

    p_ins = sub.add_parser("inspect", help="Per cluster: size, pulls, mean reward, distinctive terms, sample documents.")
    p_ins.add_argument("run_dir", help="A finished run folder.")
    p_ins.add_argument("--cluster", type=int, help="Show this cluster only, with more samples.")
    p_ins.add_argument("--top", type=int, default=10, help="Distinctive terms per cluster (default 10).")
    p_ins.set_defaults(handler=cmd_inspect)


def cmd_report(args: argparse.Namespace) -> int:
    from ..layout import FolderLock, check_files
    from ..report import write_report

    if not (Path(args.run_dir) / "summary.json").exists():
        print(f"equal: error: {args.run_dir} holds no finished run (no summary.json)", file=sys.stderr)
        return 2
    check_files(args.run_dir)
    with FolderLock(args.run_dir):
        print(write_report(args.run_dir))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..export import ExportError, export
    from ..hygiene import HygieneError
    from ..layout import FolderLock, check_files

    check_files(args.run_dir)  # a damaged run is refused, never exported short
    try:
        with FolderLock(args.run_dir):  # the export writes its drop report into the run folder
            res = export(args.run_dir, args.format, args.out, validation=args.validation, seed=args.seed,
                         decontaminate=args.decontaminate, hygiene=not args.no_hygiene, license=args.license)
    except (ExportError, HygieneError) as e:
        print(f"equal: error: {e}", file=sys.stderr)
        return 2
    h = res.hygiene
    print(f"export: {res.out} ({args.format}; {', '.join(f'{k} {n}' for k, n in res.splits.items())} pairs)")
    print(f"hygiene: {h['kept']} of {h['pairs']} pairs kept; dropped {h['contaminated']} contaminated, "
          f"{h.get('low_quality', 0)} by quality rules, {h['exact_duplicate']} exact and {h['near_duplicate']} near "
          f"duplicates ({res.report})")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from ..inspection import InspectError, inspect_run
    from ..layout import check_files

    check_files(args.run_dir)
    try:
        sys.stdout.write(inspect_run(args.run_dir, cluster=args.cluster, top_terms=args.top))
    except InspectError as e:
        print(f"equal: error: {e}", file=sys.stderr)
        return 2
    return 0
