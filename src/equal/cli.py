"""The ``equal`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

from .config import Config, ConfigError
from .errors import EqualError, Interrupted


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
        "executor": "executor",
    }
    for attr, key in flag_map.items():
        value = getattr(args, attr, None)
        if value is not None:
            overrides[key] = value
    if getattr(args, "no_cache", False):
        overrides["extract.cache"] = False
    overrides.update(_parse_set(getattr(args, "set", None) or []))
    if getattr(args, "decontaminate", None):
        base = overrides.get("hygiene.decontaminate", cfg.hygiene.decontaminate) or []
        overrides["hygiene.decontaminate"] = [*base, *args.decontaminate]
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
    e.add_argument("--extractor", help="heuristic (no LLM, default), openai, or a registered extractor.")
    e.add_argument("--llm-base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1.")
    e.add_argument("--llm-model", help="Model name sent to the endpoint.")
    e.add_argument("--llm-concurrency", type=int, help="LLM requests in flight.")
    e.add_argument("--cache-dir", help="Extraction cache folder (default $XDG_CACHE_HOME/equal or ~/.cache/equal).")
    e.add_argument("--no-cache", action="store_true", help="Do not read or write the extraction cache.")
    o = p.add_argument_group("other")
    o.add_argument("--executor", choices=["local", "ray"], help="Where the per-document stages run: local (default) "
                   "or ray (Ray Data; address from ray.address or $RAY_ADDRESS, else a local Ray; pip install equal[ray]).")
    o.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="Override any config field by dotted name, e.g. --set bandit.alpha=0.05 (repeatable).")


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class _SubParsers(argparse._SubParsersAction):
    """Every subcommand also takes ``--log-level`` (after the subcommand, as users type it)."""

    def add_parser(self, name, **kwargs):  # type: ignore[override]
        p = super().add_parser(name, **kwargs)
        p.add_argument("--log-level", choices=LOG_LEVELS, type=str.lower, default=argparse.SUPPRESS,
                       help="Logging level of messages on stderr (default warning; info adds the run's "
                       "status lines as log records).")
        return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="equal", description="EQUAL: select documents with a bandit over clusters "
                                     "and extract instruction-tuning QA pairs from them.")
    parser.add_argument("--version", action="version", version=f"equal {__import__('equal').__version__}")
    parser.add_argument("--log-level", choices=LOG_LEVELS, type=str.lower, default="warning",
                        help="Logging level of messages on stderr (default warning).")
    parser.register("action", "parsers", _SubParsers)
    sub = parser.add_subparsers(dest="command", required=True)

    p_run = sub.add_parser("run", help="Run (or resume) the pipeline into a run folder.",
                           description="Run EQUAL end to end. Running again with the same --out resumes.")
    _add_run_flags(p_run, required=True)
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

    p_rep = sub.add_parser("report", help="(Re)write report.md, its PNG plots and report.html for a run folder.")
    p_rep.add_argument("run_dir", help="A run folder (the --out of `equal run`).")

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

    p_ins = sub.add_parser("inspect", help="Per cluster: size, pulls, mean reward, distinctive terms, sample documents.")
    p_ins.add_argument("run_dir", help="A finished run folder.")
    p_ins.add_argument("--cluster", type=int, help="Show this cluster only, with more samples.")
    p_ins.add_argument("--top", type=int, default=10, help="Distinctive terms per cluster (default 10).")
    _add_tune_parsers(sub)

    p_cfg = sub.add_parser("config", help="Print the effective config (defaults, YAML file and flags merged).")
    _add_run_flags(p_cfg, required=False)
    p_cfg.add_argument("--show", action="store_true", help="Print the effective config as commented YAML (default).")
    return parser


def _add_tune_parsers(sub) -> None:
    p = sub.add_parser("train", help="Fine-tune a model with a LoRA adapter on a run's pairs (needs equal[train]).",
                       description="Supervised fine-tuning (TRL SFTTrainer + peft LoRA) on the run's prompt-completion "
                       "export (RUN_DIR/prompt_completion.jsonl: the pairs that pass the run's hygiene, written from "
                       "dataset.jsonl when missing or older), the loss on the answers. DIR receives the adapter, "
                       "the tokenizer, base_model.json, train_log.jsonl and train_summary.json.")
    p.add_argument("run_dir", help="A run folder (or a prompt-completion or messages .jsonl file, or an export folder "
                   "with train.jsonl).")
    p.add_argument("--model", required=True, help="Base model: a Hugging Face folder or name, or a .gguf file.")
    p.add_argument("--out", required=True, help="Output folder: the adapter itself.")
    p.add_argument("--max-steps", type=int, help="Stop after this many optimiser steps.")
    p.add_argument("--epochs", type=float, help="Passes over the training split.")
    p.add_argument("--lr", type=float, help="Peak learning rate.")
    p.add_argument("--batch-size", type=int, help="Sequences per batch (default: 8 on a GPU, 4 on a CPU).")
    p.add_argument("--max-length", type=int, help="Token limit per sequence (default: 1024 on a GPU, 256 on a CPU).")
    p.add_argument("--lora-r", type=int, help="LoRA rank (default 16).")
    p.add_argument("--device", help="cuda, cpu, ... (default: cuda when available).")
    p.add_argument("--threads", type=int, help="CPU threads (default: the idle cores, at least one).")
    p.add_argument("--config", help="YAML file of train settings (top level or under 'train:').")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="Override a train setting, e.g. "
                   "--set packing=true --set target_modules=q_proj,v_proj (repeatable; see --show-config).")
    p.add_argument("--show-config", action="store_true", help="Print the effective train settings and exit.")

    p = sub.add_parser("eval", help="Score a base model or a trained adapter on a JSONL benchmark (needs equal[train]).",
                       description="Greedy generation on a benchmark: gsm8k (exact match of the final number after "
                       "'####') or code (pass@1: each completion runs against the item's tests in a sandbox: bubblewrap "
                       "namespaces, no network, a time limit). vLLM when installed (and a GPU), transformers otherwise.")
    p.add_argument("model", help="An `equal train` output folder, a Hugging Face folder or name, or a .gguf file.")
    p.add_argument("--benchmark", required=True, help="JSONL benchmark file.")
    p.add_argument("--kind", required=True, choices=["gsm8k", "code"], help="How items are read and scored.")
    p.add_argument("--limit", type=int, help="Score only the first N items.")
    p.add_argument("--out", help="Write the result (score, n, per-item results) to this JSON file.")
    p.add_argument("--max-new-tokens", type=int, help="Generation limit per item (default: 256 gsm8k, 512 code).")
    p.add_argument("--batch-size", type=int, default=8, help="Prompts per generation batch (default 8).")
    p.add_argument("--timeout", type=float, default=10.0, help="Seconds each code program may run (default 10).")
    p.add_argument("--device", help="cuda, cpu, ... (default: cuda when available).")
    p.add_argument("--threads", type=int, help="CPU threads (default: the idle cores, at least one).")
    p.add_argument("--backend", choices=["auto", "vllm", "transformers"], default="auto",
                   help="auto: vLLM when installed and a GPU is present, else transformers.")
    p.add_argument("--unsafe-exec", action="store_true",
                   help="--kind code: where the sandbox (bubblewrap with user, pid, mount and network namespaces) "
                   "cannot be made, run model-written code unsandboxed anyway; it can then reach this machine.")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = getattr(logging, args.log_level.upper())
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(level)  # also where a handler was already set (in-process callers)
    try:
        return _dispatch(parser, args)
    except Interrupted as e:
        print(f"equal: interrupted (signal {e.signum}); progress is saved. Resume with the same command.",
              file=sys.stderr)
        return e.exit_code
    except EqualError as e:  # every user-facing error: one line, its exit code
        print(f"equal: {e.label}: {e}", file=sys.stderr)
        return e.exit_code


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "report":
        from .layout import FolderLock, check_files
        from .report import write_report

        if not (Path(args.run_dir) / "summary.json").exists():
            print(f"equal: error: {args.run_dir} holds no finished run (no summary.json)", file=sys.stderr)
            return 2
        check_files(args.run_dir)
        with FolderLock(args.run_dir):
            print(write_report(args.run_dir))
        return 0
    if args.command == "export":
        return _cmd_export(args)
    if args.command == "inspect":
        return _cmd_inspect(args)
    if args.command in ("train", "eval"):
        return _cmd_train(args) if args.command == "train" else _cmd_eval(args)
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
    parser.error(f"unknown command {args.command}")
    return 2


def _cmd_dry_run(cfg: Config, args: argparse.Namespace) -> int:
    import json

    from .estimate import estimate, format_estimate

    if not cfg.corpus:
        print("equal: error: missing --corpus (or set it in --config)", file=sys.stderr)
        return 2
    est = estimate(cfg, restart=args.restart)
    sys.stdout.write(json.dumps(est) + "\n" if args.json else format_estimate(est))
    return 0


def _cmd_run(cfg: Config, args: argparse.Namespace) -> int:
    from .run import run

    if args.dry_run:
        return _cmd_dry_run(cfg, args)
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
    from .progress import summary_table

    summary_table(s, sys.stdout)
    print(f"dataset: {out / 'dataset.jsonl'} ({s['pairs']} pairs from {s['docs_extracted']} of {s['docs_total']} documents)")
    print(f"rounds:  {out / 'rounds.jsonl'} ({s['rounds']} rounds)")
    if (out / "report.md").exists():
        print(f"report:  {out / 'report.md'}" + (f" and {out / 'report.html'}" if (out / "report.html").exists() else ""))
    h = s.get("hygiene") or {}
    if "kept" in h:
        print(f"hygiene: {h['kept']} of {h['pairs']} pairs pass ({h['exact_duplicate']} exact and "
              f"{h['near_duplicate']} near duplicates, {h['contaminated']} contaminated; {out / h['report']})")
    print(f"summary: {out / 'summary.json'} (final OT distance to the reference: "
          f"{s['final_ot']:.4f})" if s["final_ot"] is not None else f"summary: {out / 'summary.json'}")
    return 0


def _cmd_extract_all(cfg: Config, args: argparse.Namespace) -> int:
    from .experiments.table import extract_all
    from .extract.base import EndpointDown, SpendCapReached
    from .layout import FolderLock

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


def _cmd_compare(cfg: Config, args: argparse.Namespace) -> int:
    from .experiments.compare import compare

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


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import ExportError, export
    from .hygiene import HygieneError
    from .layout import FolderLock, check_files

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


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .inspection import InspectError, inspect_run
    from .layout import check_files

    check_files(args.run_dir)
    try:
        sys.stdout.write(inspect_run(args.run_dir, cluster=args.cluster, top_terms=args.top))
    except InspectError as e:
        print(f"equal: error: {e}", file=sys.stderr)
        return 2
    return 0


def _missing_train_extra(e: ImportError) -> int:
    if e.name == "vllm":
        print("equal: error: --backend vllm needs vLLM: pip install vllm", file=sys.stderr)
        return 2
    print(f"equal: error: {e.name or e} is not installed; training and evaluation need the extra: "
          "pip install 'equal[train]'", file=sys.stderr)
    return 2


def _cmd_train(args: argparse.Namespace) -> int:
    try:
        from .tune.models import ModelError
        from .tune.train import TrainConfig, TrainError, train
    except ImportError as e:
        return _missing_train_extra(e)
    try:
        cfg = TrainConfig.from_yaml(args.config) if args.config else TrainConfig()
        flags = {"max_steps": args.max_steps, "epochs": args.epochs, "learning_rate": args.lr,
                 "batch_size": args.batch_size, "max_length": args.max_length, "lora_r": args.lora_r,
                 "device": args.device, "threads": args.threads}
        overrides = {k: v for k, v in flags.items() if v is not None}
        overrides.update(_parse_set(args.set or []))
        cfg = cfg.replace(**overrides) if overrides else cfg
        if args.show_config:
            sys.stdout.write(cfg.to_yaml())
            return 0
        if Path(args.run_dir).is_dir():
            from .layout import check_files

            check_files(args.run_dir)  # a damaged run folder is refused
        result = train(args.run_dir, args.model, args.out, cfg, say=lambda m: print(m, file=sys.stderr))
    except ImportError as e:
        return _missing_train_extra(e)
    except (ConfigError, ModelError, TrainError) as e:
        print(f"equal: error: {e}", file=sys.stderr)
        return 2
    s = result.summary
    print(f"adapter: {result.out} ({s['steps']} steps on {s['device']}, {s['seconds']:.0f}s)")
    print(f"loss:    {s['first_loss']:.4f} -> {s['last_loss']:.4f} (first and last step)"
          + (f"; validation {s['eval_loss']:.4f}" if s["eval_loss"] is not None else ""))
    print(f"log:     {result.out / 'train_log.jsonl'}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    try:
        from .tune.bench_eval import evaluate, load_benchmark, make_generator, write_result
        from .tune.coderun import SandboxUnavailable, require_sandbox
        from .tune.models import ModelError
    except ImportError as e:
        return _missing_train_extra(e)
    say = lambda m: print(m, file=sys.stderr)  # noqa: E731
    try:
        if args.kind == "code" and not args.unsafe_exec:
            require_sandbox()  # before any model is loaded
        items = load_benchmark(args.benchmark, args.kind, limit=args.limit)
        max_new = args.max_new_tokens or (256 if args.kind == "gsm8k" else 512)
        generator, info = make_generator(args.model, max_new_tokens=max_new, batch_size=args.batch_size,
                                         device=args.device, backend=args.backend, threads=args.threads)
        result = evaluate(items, generator, args.kind, timeout=args.timeout, say=say, unsafe_exec=args.unsafe_exec)
    except ImportError as e:
        return _missing_train_extra(e)
    except (ModelError, SandboxUnavailable, ValueError, OSError) as e:
        print(f"equal: error: {e}", file=sys.stderr)
        return 2
    result.meta.update(model=str(args.model), benchmark=str(args.benchmark), max_new_tokens=max_new, **info)
    if args.out:
        write_result(result, args.out)
        say(f"result: {args.out}")
    print(f"{args.kind}: {result.score:.4f} ({result.correct}/{result.n})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
