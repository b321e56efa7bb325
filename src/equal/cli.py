"""The ``equal`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

from .config import Config, ConfigError


def _parse_set(values: list[str]) -> dict[str, Any]:
    out = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(raw)
    return out


def _load_config(args: argparse.Namespace) -> Config:
    cfg = Config.from_yaml(args.config) if getattr(args, "config", None) else Config()
    overrides: dict[str, Any] = {}
    flag_map = {
        "corpus": "corpus", "reference": "reference", "out": "out", "budget": "budget", "clusters": "cluster.k",
        "extractor": "extract.name", "embedder": "embed.model", "seed": "seed", "align": "align.mode",
        "llm_base_url": "extract.llm.base_url", "llm_model": "extract.llm.model",
        "llm_concurrency": "extract.llm.concurrency", "cache_dir": "extract.cache_dir", "policy": "policy",
    }
    for attr, key in flag_map.items():
        value = getattr(args, attr, None)
        if value is not None:
            overrides[key] = value
    if getattr(args, "no_cache", False):
        overrides["extract.cache"] = False
    overrides.update(_parse_set(getattr(args, "set", None) or []))
    return cfg.replace(**overrides) if overrides else cfg


def _add_run_flags(p: argparse.ArgumentParser, required: bool) -> None:
    g = p.add_argument_group("inputs and output")
    g.add_argument("--corpus", required=False, help="Corpus: JSONL file (.gz/.zst too), Parquet file/folder, a folder or "
                   "quoted glob of JSONL/Parquet shards, or an HF dataset saved to disk.")
    g.add_argument("--reference", required=False, help="Reference QA set (JSONL of question/answer).")
    g.add_argument("--out", required=False, help="Run folder; an existing one is resumed.")
    g.add_argument("--config", help="YAML config file; flags override its values.")
    s = p.add_argument_group("selection")
    s.add_argument("--budget", type=float, help="Extraction budget: fraction of the corpus (<= 1) or document count (> 1).")
    s.add_argument("--clusters", type=int, help="Number of k-means clusters (bandit arms); default scales with corpus and budget.")
    s.add_argument("--align", choices=["adapter", "full", "none"], help="Alignment mode (default adapter).")
    s.add_argument("--embedder", help="Sentence-transformers model name or local path (default: shipped "
                   "all-MiniLM-L6-v2); 'static': a model2vec model distilled from it on first use (fast); or the "
                   "folder of a model2vec model.")
    s.add_argument("--seed", type=int, help="Random seed.")
    s.add_argument("--policy", help="Selection strategy (default equal); see `equal config --show`.")
    e = p.add_argument_group("extraction")
    e.add_argument("--extractor", choices=["heuristic", "openai"], help="heuristic (no LLM, default) or openai.")
    e.add_argument("--llm-base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1.")
    e.add_argument("--llm-model", help="Model name sent to the endpoint.")
    e.add_argument("--llm-concurrency", type=int, help="LLM requests in flight.")
    e.add_argument("--cache-dir", help="Extraction cache folder (default $XDG_CACHE_HOME/equal or ~/.cache/equal).")
    e.add_argument("--no-cache", action="store_true", help="Do not read or write the extraction cache.")
    o = p.add_argument_group("other")
    o.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="Override any config field by dotted name, e.g. --set bandit.alpha=0.05 (repeatable).")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="equal", description="EQUAL: select documents with a bandit over clusters "
                                     "and extract instruction-tuning QA pairs from them.")
    parser.add_argument("--version", action="version", version=f"equal {__import__('equal').__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p_run = sub.add_parser("run", help="Run (or resume) the pipeline into a run folder.",
                           description="Run EQUAL end to end. Running again with the same --out resumes.")
    _add_run_flags(p_run, required=True)
    p_run.add_argument("--restart", action="store_true", help="Discard what is in --out and start over.")
    p_run.add_argument("--quiet", "-q", action="store_true", help="No progress bars.")

    p_all = sub.add_parser("extract-all", help="Extract every document once into an extraction table (for replays).",
                           description="Extract every document of the corpus once (resumable, through the "
                           "extraction cache) into a table of pairs and their vectors, for `equal compare`.")
    _add_run_flags(p_all, required=False)
    p_all.add_argument("--quiet", "-q", action="store_true", help="No progress bars.")

    p_cmp = sub.add_parser("compare", help="Replay selection strategies against an extraction table (no LLM calls).",
                           description="Run every policy at every budget and seed against the same extraction "
                           "table and write results.csv, results.md and plots into --out.")
    _add_run_flags(p_cmp, required=False)
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

    p_rep = sub.add_parser("report", help="(Re)write report.md and its PNG plots for a run folder.")
    p_rep.add_argument("run_dir", help="A run folder (the --out of `equal run`).")

    p_cfg = sub.add_parser("config", help="Print the effective config (defaults, YAML file and flags merged).")
    _add_run_flags(p_cfg, required=False)
    p_cfg.add_argument("--show", action="store_true", help="Print the effective config as commented YAML (default).")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "report":
        from .report import write_report

        if not (Path(args.run_dir) / "summary.json").exists():
            print(f"equal: error: {args.run_dir} holds no finished run (no summary.json)", file=sys.stderr)
            return 2
        print(write_report(args.run_dir))
        return 0
    try:
        cfg = _load_config(args)
        if args.command == "config":
            sys.stdout.write(cfg.to_yaml(comments=True))
            return 0
        if args.command == "run":
            return _cmd_run(cfg, args)
        if args.command == "extract-all":
            return _cmd_extract_all(cfg, args)
        if args.command == "compare":
            return _cmd_compare(cfg, args)
    except ConfigError as e:
        print(f"equal: error: {e}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command}")
    return 2


def _cmd_run(cfg: Config, args: argparse.Namespace) -> int:
    from .corpus import CorpusError
    from .embed import EmbedderError
    from .io import OutputError
    from .run import Interrupted, RunError, run

    missing = [name for name in ("corpus", "reference") if not getattr(cfg, name)]
    if missing:
        print(f"equal: error: missing {' and '.join('--' + m for m in missing)} (or set it in --config)", file=sys.stderr)
        return 2
    try:
        result = run(cfg, progress=not args.quiet, restart=args.restart, messages=True)
    except Interrupted as e:
        print(f"equal: interrupted (signal {e.signum}); progress is saved. Resume with the same command.",
              file=sys.stderr)
        return 128 + e.signum
    except (RunError, CorpusError, EmbedderError, OutputError) as e:
        print(f"equal: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"equal: error: {e.strerror or e} ({getattr(e, 'filename', '') or ''}); progress so far is saved",
              file=sys.stderr)
        return 1
    if result.already_finished:
        return 0
    s = result.summary
    out = Path(cfg.out)
    print(f"dataset: {out / 'dataset.jsonl'} ({s['pairs']} pairs from {s['docs_extracted']} of {s['docs_total']} documents)")
    print(f"rounds:  {out / 'rounds.jsonl'} ({s['rounds']} rounds)")
    if (out / "report.md").exists():
        print(f"report:  {out / 'report.md'}")
    print(f"summary: {out / 'summary.json'} (final OT distance to the reference: "
          f"{s['final_ot']:.4f})" if s["final_ot"] is not None else f"summary: {out / 'summary.json'}")
    return 0


def _cmd_extract_all(cfg: Config, args: argparse.Namespace) -> int:
    from .corpus import CorpusError
    from .embed import EmbedderError
    from .experiments.table import TableError, extract_all
    from .extract.base import EndpointDown

    if not cfg.corpus or not args.out:
        print("equal: error: extract-all needs --corpus and --out (the table folder)", file=sys.stderr)
        return 2
    try:
        out = extract_all(cfg, args.out, progress=not args.quiet, say=lambda m: print(m, file=sys.stderr))
    except (CorpusError, EmbedderError, TableError) as e:
        print(f"equal: error: {e}", file=sys.stderr)
        return 2
    except EndpointDown as e:
        print(f"equal: error: {e} — run the same command again to resume", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("equal: interrupted; the table is saved up to its last batch. Resume with the same command.",
              file=sys.stderr)
        return 130
    print(f"table: {out}")
    return 0


def _cmd_compare(cfg: Config, args: argparse.Namespace) -> int:
    from .corpus import CorpusError
    from .experiments.compare import compare
    from .experiments.table import TableError
    from .reference import ReferenceError

    missing = [n for n in ("corpus", "reference") if not getattr(cfg, n)]
    if missing or not args.out:
        print("equal: error: compare needs --corpus, --reference, --table and --out", file=sys.stderr)
        return 2
    try:
        budgets = [float(b) for b in args.budgets.split(",") if b.strip()]
        policies = [p.strip() for p in args.policies.split(",") if p.strip()]
        out = compare(cfg, args.table, policies, budgets, args.seeds, args.out, label_field=args.label_field,
                      target=args.target, eval_size=args.eval_size, progress=not args.quiet)
    except (CorpusError, ReferenceError, TableError, ValueError) as e:
        print(f"equal: error: {e}", file=sys.stderr)
        return 2
    print(f"results: {out / 'results.md'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
