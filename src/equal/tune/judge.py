"""The downstream judge's two measures: LoRA-tune a model on some pairs, and score held-out answers.

:func:`answer_nll` is the judge: the negative log-likelihood of each reference answer given its question,
through the model's chat template, over the answer's tokens only (the assistant turn, its end-of-turn token
included), returned per item as ``(sum, tokens)`` so that a paired bootstrap can resample items.
:func:`tune_on_pairs` trains a LoRA adapter with ``equal train``'s own trainer (:func:`equal.tune.train.train`)
on a list of pairs for a fixed number of steps, so every selection gets the same compute; the caller samples
the pairs (``bench/downstream.py``: at most ``steps x batch`` of them, seeded).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np


def conversations(pairs: Sequence[tuple[str, str]]) -> list[list[dict[str, str]]]:
    """One user/assistant conversation per (question, answer) pair."""
    return [[{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in pairs]


def write_rows(path: Path, pairs: Sequence[tuple[str, str]]) -> Path:
    """The pairs as TRL conversational prompt/completion rows (what ``equal train`` reads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for c in conversations(pairs):
            f.write(json.dumps({"prompt": c[:1], "completion": c[1:]}, ensure_ascii=False) + "\n")
    return path


def answer_ids(tok: Any, question: str, answer: str, max_length: int) -> tuple[list[int], int] | None:
    """``(ids, n_prompt)``: the chat-templated conversation's token ids, cut at ``max_length``, and how many of
    them are the prompt (the user turn and the assistant header). None when no answer token fits."""
    prompt = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=True,
                                     add_generation_prompt=True)
    full = tok.apply_chat_template([{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
                                   tokenize=True)
    prompt, full = list(_ids(prompt)), list(_ids(full))
    if full[: len(prompt)] != prompt:  # a template that re-renders the prompt: fall back to plain concatenation
        full = prompt + list(tok(answer, add_special_tokens=False)["input_ids"])
    full = full[:max_length]
    if len(full) <= len(prompt):
        return None
    return full, len(prompt)


def _ids(x: Any) -> list[int]:
    if hasattr(x, "keys") and "input_ids" in x:  # newer transformers return a BatchEncoding
        x = x["input_ids"]
    return list(x)


def answer_nll(model: Any, tok: Any, items: Sequence[tuple[str, str]], max_length: int = 512,
               batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Per item: the summed NLL (nats) of its answer tokens given its question, and their number (0 and 0 for
    an item whose answer does not fit in ``max_length``). The mean per-token NLL is ``sums.sum() / n.sum()``."""
    import torch

    enc = [answer_ids(tok, q, a, max_length) for q, a in items]
    sums, counts = np.zeros(len(items)), np.zeros(len(items), dtype=np.int64)
    device = next(model.parameters()).device
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    todo = [i for i, e in enumerate(enc) if e is not None]
    todo.sort(key=lambda i: len(enc[i][0]))  # similar lengths together: less padding
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for s in range(0, len(todo), batch_size):
            idx = todo[s: s + batch_size]
            width = max(len(enc[i][0]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            target = torch.zeros((len(idx), width), dtype=torch.bool)
            for r, i in enumerate(idx):
                full, n_prompt = enc[i]
                ids[r, : len(full)] = torch.tensor(full)
                mask[r, : len(full)] = 1
                target[r, n_prompt: len(full)] = True
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            nll = -logp.gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)
            t = target[:, 1:].to(device)
            for r, i in enumerate(idx):
                sums[i] = float(nll[r][t[r]].sum())
                counts[i] = int(t[r].sum())
    if was_training:
        model.train()
    return sums, counts


def mean_nll(sums: np.ndarray, counts: np.ndarray) -> float:
    n = int(np.sum(counts))
    return float(np.sum(sums) / n) if n else math.nan


def tune_on_pairs(pairs: Sequence[tuple[str, str]], model: str, out: Path, cfg: Any) -> Any:
    """A LoRA adapter trained on ``pairs`` with :func:`equal.tune.train.train` (``cfg``: a
    :class:`~equal.tune.train.TrainConfig`, its ``max_steps`` set; no validation split), written into ``out``;
    returns the :class:`~equal.tune.train.TrainResult` (its ``model`` is the trained model, in memory)."""
    from .train import train

    data = write_rows(Path(out) / "train_rows.jsonl", pairs)
    return train(data, model, Path(out) / "adapter", cfg.replace(val_fraction=0.0))
