"""``equal train`` (LoRA SFT on a run's pairs) and ``equal eval`` (a model on a benchmark)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..config import Config
from ..config import ConfigError  # noqa: F401 - caught by cmd_train
from ..errors import EqualError
from .flags import add_train_flags, parse_set, train_overrides


def add_parsers(sub) -> None:
    p = sub.add_parser("train", help="Fine-tune a model with a LoRA adapter on a run's pairs (needs equal[train]).",
                       description="Supervised fine-tuning (TRL SFTTrainer + peft LoRA) on the run's prompt-completion "
                       "export (RUN_DIR/prompt_completion.jsonl: the pairs that pass the run's hygiene, written from "
                       "dataset.jsonl when missing or older), the loss on the answers. DIR receives the adapter, "
                       "the tokenizer, base_model.json, train_log.jsonl and train_summary.json.")
    p.add_argument("run_dir", help="A run folder (or a prompt-completion or messages .jsonl file, or an export folder "
                   "with train.jsonl).")
    p.add_argument("--model", required=True, help="Base model: a Hugging Face folder or name, or a .gguf file.")
    p.add_argument("--out", required=True, help="Output folder: the adapter itself.")
    from ..tune.train import TrainConfig  # no heavy import: torch and trl load when training starts

    add_train_flags(p, TrainConfig)
    p.add_argument("--config", help="YAML file of train settings (top level or under 'train:').")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="Override a train setting, e.g. "
                   "--set packing=true --set target_modules=q_proj,v_proj (repeatable; see --show-config).")
    p.add_argument("--show-config", action="store_true", help="Print the effective train settings and exit.")
    p.set_defaults(handler=cmd_train)

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
    p.set_defaults(handler=cmd_eval)


def missing_train_extra(e: ImportError) -> int:
    if e.name == "vllm":
        print("equal: error: --backend vllm needs vLLM: pip install vllm", file=sys.stderr)
        return 2
    print(f"equal: error: {e.name or e} is not installed; training and evaluation need the extra: "
          "pip install 'equal[train]'", file=sys.stderr)
    return 2


def cmd_train(args: argparse.Namespace) -> int:
    try:
        from ..tune.models import ModelError
        from ..tune.train import TrainConfig, TrainError, train
    except ImportError as e:
        return missing_train_extra(e)
    try:
        cfg = TrainConfig.from_yaml(args.config) if args.config else TrainConfig()
        overrides = train_overrides(args)
        overrides.update(parse_set(args.set or []))
        cfg = cfg.replace(**overrides) if overrides else cfg
        if args.show_config:
            sys.stdout.write(cfg.to_yaml())
            return 0
        if Path(args.run_dir).is_dir():
            from ..layout import check_files

            check_files(args.run_dir)  # a damaged run folder is refused
        result = train(args.run_dir, args.model, args.out, cfg, say=lambda m: print(m, file=sys.stderr))
    except ImportError as e:
        return missing_train_extra(e)
    except (ConfigError, ModelError, TrainError) as e:
        print(f"equal: error: {e}", file=sys.stderr)
        return 2
    s = result.summary
    print(f"adapter: {result.out} ({s['steps']} steps on {s['device']}, {s['seconds']:.0f}s)")
    print(f"loss:    {s['first_loss']:.4f} -> {s['last_loss']:.4f} (first and last step)"
          + (f"; validation {s['eval_loss']:.4f}" if s["eval_loss"] is not None else ""))
    print(f"log:     {result.out / 'train_log.jsonl'}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    try:
        from ..tune.bench_eval import evaluate, load_benchmark, make_generator, write_result
        from ..tune.coderun import SandboxUnavailable, require_sandbox
        from ..tune.models import ModelError
    except ImportError as e:
        return missing_train_extra(e)
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
        return missing_train_extra(e)
    except (ModelError, SandboxUnavailable, ValueError, OSError) as e:
        print(f"equal: error: {e}", file=sys.stderr)
        return 2
    result.meta.update(model=str(args.model), benchmark=str(args.benchmark), max_new_tokens=max_new, **info)
    if args.out:
        write_result(result, args.out)
        say(f"result: {args.out}")
    print(f"{args.kind}: {result.score:.4f} ({result.correct}/{result.n})")
    return 0
