"""``equal train``: supervised fine-tuning with a LoRA adapter on a run's pairs.

The run's pairs that pass its hygiene become TRL's conversational prompt/completion rows, the
``prompt-completion`` export (:func:`build_train_file`, written into the run folder); an export folder or a
``.jsonl`` of such rows (or of ``messages`` rows) is read as it is. A seeded share is held out for validation, and
TRL's ``SFTTrainer`` trains a peft LoRA adapter on the rest, the loss on the assistant's answers only. The
output folder is the adapter itself:

    adapter_config.json, adapter_model.safetensors   the LoRA adapter (peft)
    tokenizer files                                  the tokenizer used (not for a GGUF base: read from the file)
    base_model.json                                  the base model (folder or name, and the .gguf file)
    train_log.jsonl                                  {"step", "loss", ...} per step; {"step", "eval_loss"} per validation
    train_summary.json                               config, device, sizes, first/last loss, time, tokens/s

Defaults follow the device: on a GPU bf16 (where supported), gradient checkpointing, sequences of 1,024
tokens, batches of 8 and a learning rate of 2e-4; on a CPU fp32, no checkpointing, 256 tokens, batches of 4
and 1e-3 (a CPU trains small models).
"""

from __future__ import annotations

from ..errors import UserError

import dataclasses
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from ..config import ConfigError, _f, _from_dict, _yaml_lines, read_yaml_mapping
from ..io import read_jsonl
from ._io import read_records
from .models import (ModelRef, bf16_supported, load_causal_lm, load_tokenizer, pick_device, resolve, set_cpu_threads,
                     write_base_record)

TRAIN_FILE = "prompt_completion.jsonl"
LOG_FILE = "train_log.jsonl"
SUMMARY_FILE = "train_summary.json"


@dataclass
class TrainConfig:
    """Supervised fine-tuning of a LoRA adapter (``equal train``). ``None`` means: chosen by the device."""

    lora_r: int = _f(16, "LoRA rank.")
    lora_alpha: int = _f(32, "LoRA scaling alpha (the update is scaled by alpha / r).")
    lora_dropout: float = _f(0.05, "Dropout on the LoRA path.")
    target_modules: str = _f("all-linear", "Modules given a LoRA adapter: 'all-linear' (every linear layer but the "
                             "output head) or a comma-separated list of module names, e.g. 'q_proj,v_proj'.")
    epochs: float = _f(1.0, "Passes over the training split (max_steps, when given, wins).")
    max_steps: int | None = _f(None, "Stop after this many optimiser steps (None: run the epochs).")
    learning_rate: float | None = _f(None, "Peak learning rate (AdamW); None: 2e-4 on a GPU (the usual LoRA rate for "
                                     "7-8B models), 1e-3 on a CPU (small models, short runs: LoRA on a small model "
                                     "takes a higher rate).")
    lr_scheduler: Literal["linear", "cosine", "constant"] = _f("linear", "Learning-rate decay after the warm-up.")
    warmup_ratio: float = _f(0.0, "Share of the steps spent warming the learning rate up.")
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    batch_size: int | None = _f(None, "Sequences per device batch; None: 8 on a GPU, 4 on a CPU.")
    grad_accum: int = _f(1, "Batches accumulated per optimiser step.")
    max_length: int | None = _f(None, "Token limit per sequence (longer ones are cut); None: 1024 on a GPU, 256 on a CPU.")
    packing: bool = _f(False, "Pack several examples into each max_length sequence (TRL best-fit packing).")
    gradient_checkpointing: bool | None = _f(None, "Recompute activations in the backward pass to save memory; "
                                             "None: on for a GPU, off for a CPU.")
    bf16: bool | None = _f(None, "Train in bfloat16; None: where the device supports it (CUDA with bf16), else fp32.")
    completion_only_loss: bool = _f(True, "Loss on the assistant's answer only (else on the whole conversation).")
    val_fraction: float = _f(0.05, "Share of the pairs held out for validation (seeded).")
    val_max: int = _f(200, "At most this many validation pairs.")
    eval_steps: int | None = _f(None, "Steps between validation passes; None: about four per run, and one at the end.")
    max_train_examples: int | None = _f(None, "Train on at most this many pairs (the first of the seeded shuffle); "
                                        "None: all. A small value with batch_size >= it repeats one batch (a smoke test).")
    device: str | None = _f(None, "Torch device (cuda, cpu, mps); None: cuda when available, else cpu.")
    threads: int | None = _f(None, "CPU threads for torch; None: the idle cores (at least one), since threads "
                             "beyond them slow every operation down on a shared machine.")
    seed: int = _f(0, "Seed for the split, the LoRA initialisation and the data order.")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "TrainConfig":
        data = dict(data or {})
        if set(data) == {"train"}:  # a YAML file with a 'train:' section
            data = data["train"] or {}
        cfg = _from_dict(cls, data, "train.")
        cfg.validate()
        return cfg

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> "TrainConfig":
        return cls.from_dict(read_yaml_mapping(path))

    def replace(self, **values: Any) -> "TrainConfig":
        d = dataclasses.asdict(self)
        for key, value in values.items():
            key = key.removeprefix("train.")
            if key not in d:
                raise ConfigError(f"unknown train config field: {key}")
            d[key] = value
        return TrainConfig.from_dict(d)

    def to_yaml(self) -> str:
        return "".join(_yaml_lines(self, 0))

    def validate(self) -> None:
        if self.lora_r < 1 or self.lora_alpha <= 0:
            raise ConfigError("train.lora_r must be >= 1 and train.lora_alpha > 0")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError("train.val_fraction must be in [0, 1)")
        for name in ("max_steps", "batch_size", "max_length", "eval_steps", "max_train_examples"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"train.{name} must be >= 1 or null")
        if self.grad_accum < 1 or self.epochs <= 0 or (self.learning_rate is not None and self.learning_rate <= 0):
            raise ConfigError("train.grad_accum must be >= 1, train.epochs and train.learning_rate > 0")

    def resolved(self, device: str) -> "TrainConfig":
        """A copy with every device-dependent ``None`` filled in for ``device``."""
        gpu = device.startswith("cuda")
        return dataclasses.replace(
            self, device=device,
            batch_size=self.batch_size or (8 if gpu else 4),
            learning_rate=self.learning_rate or (2e-4 if gpu else 1e-3),
            max_length=self.max_length or (1024 if gpu else 256),
            gradient_checkpointing=gpu if self.gradient_checkpointing is None else self.gradient_checkpointing,
            bf16=bf16_supported(device) if self.bf16 is None else self.bf16)


@dataclass
class TrainResult:
    out: Path
    steps: int
    losses: list[float]
    eval_losses: list[float]
    summary: dict[str, Any]
    model: Any = None  # the trained peft model (in memory), for callers that go on using it


class TrainError(UserError, RuntimeError):
    """Training cannot start (no data, an unreadable run folder); a user error."""


# ---------------------------------------------------------------- data
def build_train_file(run_dir: str | os.PathLike) -> Path:
    """The run's training rows (``RUN_DIR/prompt_completion.jsonl``): the ``prompt-completion`` export of the run
    (:mod:`equal.export`), i.e. the pairs that pass the run's hygiene, one TRL conversational prompt/completion
    row each. Written from ``dataset.jsonl`` when missing or older than it; no drop report is written."""
    from ..export import ROW, run_config
    from ..hygiene import apply_hygiene

    run = Path(run_dir)
    out = run / TRAIN_FILE
    src = run / "dataset.jsonl"
    if not src.is_file():
        if out.is_file():
            return out
        raise TrainError(f"{run} holds no {TRAIN_FILE} and no dataset.jsonl: not a run folder")
    if out.is_file() and out.stat().st_mtime_ns >= src.stat().st_mtime_ns:
        return out
    pairs = [r for r in read_jsonl(src) if str(r.get("question", "")).strip() and str(r.get("answer", "")).strip()]
    _, hygiene, _ = run_config(run)
    kept = [pairs[i] for i in apply_hygiene(pairs, hygiene).keep]
    if not kept:
        raise TrainError(f"{src} holds no question/answer pairs that pass the run's hygiene to train on")
    tmp = out.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for rec in kept:
            rec = {**rec, "question": str(rec["question"]).strip(), "answer": str(rec["answer"]).strip()}
            f.write(json.dumps(ROW["prompt-completion"](rec), ensure_ascii=False) + "\n")
    os.replace(tmp, out)
    return out


def find_data(run_dir: str | os.PathLike) -> Path:
    """The rows to train on: a ``.jsonl`` given directly, an export folder's ``train.jsonl`` (``prompt-completion``
    or ``messages``), or the run's ``prompt-completion`` rows (:func:`build_train_file`)."""
    p = Path(run_dir)
    if p.is_file():
        return p
    if (p / "train.jsonl").is_file() and not (p / "dataset.jsonl").is_file():
        return p / "train.jsonl"
    return build_train_file(p)


def _turns(msgs: Any) -> list[dict[str, str]] | None:
    if isinstance(msgs, list) and msgs and all(isinstance(m, dict) and "role" in m and "content" in m for m in msgs):
        return [{"role": m["role"], "content": m["content"]} for m in msgs]
    return None


def load_conversations(path: Path) -> list[list[dict[str, str]]]:
    """Conversations ending with an assistant turn, from ``prompt``/``completion`` rows (TRL's conversational
    prompt-completion, what ``equal export --format prompt-completion`` writes) or ``messages`` rows."""
    convs = []
    for rec in read_records(path):
        prompt, completion = _turns(rec.get("prompt")), _turns(rec.get("completion"))
        conv = prompt + completion if prompt and completion else _turns(rec.get("messages"))
        if conv and conv[-1]["role"] == "assistant":
            convs.append(conv)
    if not convs:
        raise TrainError(f"{path} holds no prompt/completion or messages records ending with an assistant turn")
    return convs


def split(convs: list, val_fraction: float, val_max: int, seed: int) -> tuple[list, list]:
    """Seeded shuffle, then ``(train, validation)``; validation gets at least one item when there are two or more."""
    order = list(range(len(convs)))
    random.Random(seed).shuffle(order)
    n_val = min(val_max, math.ceil(len(convs) * val_fraction)) if val_fraction > 0 and len(convs) > 1 else 0
    val = [convs[i] for i in order[:n_val]]
    train = [convs[i] for i in order[n_val:]]
    return train, val


def _as_rows(convs: list, completion_only: bool) -> list[dict[str, Any]]:
    if completion_only:  # TRL's conversational prompt-completion format: loss on the completion only
        return [{"prompt": c[:-1], "completion": c[-1:]} for c in convs]
    return [{"messages": c} for c in convs]


# ---------------------------------------------------------------- training
def _log_callback(path: Path, losses: list[float], eval_losses: list[float]):
    from transformers import TrainerCallback

    class JsonlLog(TrainerCallback):
        """One line per training step (``step``, ``loss``, ...) and per validation pass (``step``, ``eval_loss``)."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = dict(logs or {})
            if "eval_loss" in logs:
                rec = {"step": state.global_step, "eval_loss": float(logs["eval_loss"]),
                       "epoch": round(float(state.epoch or 0), 4)}
                eval_losses.append(rec["eval_loss"])
            elif "loss" in logs:
                rec = {"step": state.global_step, "loss": float(logs["loss"]),
                       "epoch": round(float(state.epoch or 0), 4)}
                for k in ("learning_rate", "grad_norm"):
                    if k in logs:
                        rec[k] = float(logs[k])
                losses.append(rec["loss"])
            else:
                return
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")

    return JsonlLog()


def train(run_dir: str | os.PathLike, model: str | os.PathLike, out: str | os.PathLike,
          cfg: TrainConfig | None = None, say: Callable[[str], None] = lambda m: None) -> TrainResult:
    """Fine-tune ``model`` with a LoRA adapter on the pairs of ``run_dir`` and write the adapter into ``out``."""
    import torch
    from peft import LoraConfig
    from transformers import PrinterCallback, set_seed
    from trl import SFTConfig, SFTTrainer

    cfg = cfg or TrainConfig()
    ref: ModelRef = resolve(model)
    device = pick_device(cfg.device)
    rc = cfg.resolved(device)
    threads = set_cpu_threads(rc.threads)
    set_seed(rc.seed)

    data = find_data(run_dir)
    convs = load_conversations(data)
    train_convs, val_convs = split(convs, rc.val_fraction, rc.val_max, rc.seed)
    if rc.max_train_examples is not None:
        train_convs = train_convs[: rc.max_train_examples]
    if not train_convs:
        raise TrainError(f"{data}: nothing left to train on after holding out {len(val_convs)} validation pairs")
    say(f"data: {data} ({len(train_convs)} train, {len(val_convs)} validation pairs)")

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / LOG_FILE
    log_path.write_text("", encoding="utf-8")
    losses: list[float] = []
    eval_losses: list[float] = []

    say(f"model: {ref.describe()} on {device} ({'bf16' if rc.bf16 else 'fp32'}, {threads} CPU threads)")
    tok = load_tokenizer(ref)
    base = load_causal_lm(ref, "bfloat16" if rc.bf16 else "float32", device)
    if rc.gradient_checkpointing:
        base.config.use_cache = False

    from datasets import Dataset

    train_ds = Dataset.from_list(_as_rows(train_convs, rc.completion_only_loss))
    val_ds = Dataset.from_list(_as_rows(val_convs, rc.completion_only_loss)) if val_convs else None
    steps_per_epoch = math.ceil(len(train_convs) / (rc.batch_size * rc.grad_accum))
    total = rc.max_steps or max(1, math.ceil(steps_per_epoch * rc.epochs))
    eval_steps = rc.eval_steps or max(1, total // 4)
    targets: str | list[str] = rc.target_modules
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    lora = LoraConfig(r=rc.lora_r, lora_alpha=rc.lora_alpha, lora_dropout=rc.lora_dropout, target_modules=targets,
                      task_type="CAUSAL_LM")
    work = out / ".trainer"
    args = SFTConfig(
        output_dir=str(work), report_to="none", save_strategy="no",
        per_device_train_batch_size=rc.batch_size, per_device_eval_batch_size=rc.batch_size,
        gradient_accumulation_steps=rc.grad_accum, num_train_epochs=rc.epochs, max_steps=total,
        learning_rate=rc.learning_rate, lr_scheduler_type=rc.lr_scheduler, warmup_steps=math.ceil(rc.warmup_ratio * total),
        weight_decay=rc.weight_decay, logging_steps=1, logging_first_step=True,
        eval_strategy="steps" if val_ds is not None else "no", eval_steps=eval_steps,
        bf16=bool(rc.bf16), fp16=False, gradient_checkpointing=bool(rc.gradient_checkpointing),
        max_length=rc.max_length, packing=rc.packing, completion_only_loss=rc.completion_only_loss if
        rc.completion_only_loss else None, use_cpu=device == "cpu", seed=rc.seed, data_seed=rc.seed,
        disable_tqdm=True, dataloader_num_workers=0, include_num_input_tokens_seen="non_padding",
    )
    trainer = SFTTrainer(model=base, args=args, train_dataset=train_ds, eval_dataset=val_ds, processing_class=tok,
                         peft_config=lora, callbacks=[_log_callback(log_path, losses, eval_losses)])
    trainer.remove_callback(PrinterCallback)  # the log goes to train_log.jsonl, not to stdout
    n_trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    say(f"training: {total} steps, batch {rc.batch_size} x {rc.grad_accum}, max length {rc.max_length}, "
        f"LoRA r={rc.lora_r} on {rc.target_modules} ({n_trainable:,} trainable parameters)")
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = trainer.train()
    if val_ds is not None and (not eval_losses or trainer.state.global_step % eval_steps):
        trainer.evaluate()  # a validation pass at the very end
    seconds = time.perf_counter() - t0
    tokens = float(getattr(trainer.state, "num_input_tokens_seen", 0) or 0)

    trainer.model.save_pretrained(str(out))
    if not ref.is_gguf:  # a GGUF tokenizer does not survive save_pretrained (see models.load_tokenizer)
        tok.save_pretrained(str(out))
    write_base_record(out, ref)
    shutil.rmtree(work, ignore_errors=True)

    summary = {
        "data": str(data), "base": ref.to_record(), "device": device,
        "dtype": "bfloat16" if rc.bf16 else "float32",
        "param_device": str(next(trainer.model.parameters()).device), "cpu_threads": threads,
        "config": dataclasses.asdict(rc), "train_examples": len(train_convs), "validation_examples": len(val_convs),
        "steps": int(trainer.state.global_step), "trainable_parameters": n_trainable,
        "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
        "eval_loss": eval_losses[-1] if eval_losses else None, "train_loss": float(result.training_loss),
        "seconds": round(seconds, 2), "tokens_seen": tokens or None,
        "tokens_per_second": round(tokens / seconds, 1) if tokens and seconds > 0 else None,
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda") else None,
    }
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return TrainResult(out=out, steps=summary["steps"], losses=losses, eval_losses=eval_losses, summary=summary,
                       model=trainer.model)
