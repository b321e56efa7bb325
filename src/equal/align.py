"""Warm-up sampling and contrastive alignment of documents with the QA pairs they yield.

Two ways to align, both with the InfoNCE loss of the paper (a document as
anchor, one of its own pairs as positive, the other pairs in the batch as
negatives):

* :func:`train_adapter` learns a linear map on *frozen* embeddings, so the
  corpus is embedded once and the map is applied to the stored vectors;
* :func:`train_full` fine-tunes the whole sentence-transformers model with
  ``MultipleNegativesRankingLoss`` (what the paper does).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .config import AlignConfig


@dataclass
class AlignExamples:
    """Training examples: for each document, the indices of its pairs."""

    doc_rows: np.ndarray  # (m,) row of each example document (into the caller's doc arrays)
    pair_groups: list[np.ndarray]  # per document, the rows of its pairs

    @classmethod
    def from_pair_docs(cls, pair_doc: np.ndarray, max_pairs: int, seed: int) -> "AlignExamples":
        """Group pair rows by document; cap the total number of pairs at ``max_pairs``."""
        order = np.argsort(pair_doc, kind="stable")
        docs, starts = np.unique(pair_doc[order], return_index=True)
        groups = np.split(order, starts[1:]) if len(order) else []
        rng = np.random.default_rng([seed, 0xA12])
        if sum(len(g) for g in groups) > max_pairs:
            keep = max(1, max_pairs // max(1, len(groups)))
            groups = [g[rng.permutation(len(g))[:keep]] for g in groups]
        return cls(doc_rows=docs.astype(np.int64), pair_groups=groups)

    def __len__(self) -> int:
        return len(self.doc_rows)


def _batches(ex: AlignExamples, batch_size: int, rng: np.random.Generator):
    """Batches of distinct documents, each with one randomly chosen pair (no false in-batch negatives)."""
    order = rng.permutation(len(ex))
    for s in range(0, len(order), batch_size):
        sel = order[s: s + batch_size]
        if len(sel) < 2:
            continue
        pairs = np.array([ex.pair_groups[i][rng.integers(len(ex.pair_groups[i]))] for i in sel])
        yield ex.doc_rows[sel], pairs


def train_adapter(doc_vecs: np.ndarray, pair_vecs: np.ndarray, ex: AlignExamples, cfg: AlignConfig,
                  seed: int, progress: bool = True) -> tuple[np.ndarray, dict]:
    """Learn ``W`` (d x d, started at the identity) so that ``normalize(x @ W)`` puts each document
    near its own pairs. The same map is applied to documents and pairs.

    Returns the matrix and training stats (loss before/after, in-batch accuracy).
    """
    import torch

    from .progress import bar

    d = doc_vecs.shape[1]
    if len(ex) < 2:
        return np.eye(d, dtype=np.float32), {"examples": len(ex), "skipped": "fewer than 2 documents with pairs"}
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 0xA13])
    W = torch.nn.Parameter(torch.eye(d))
    opt = torch.optim.Adam([W], lr=cfg.adapter_learning_rate)
    D = torch.from_numpy(np.ascontiguousarray(doc_vecs, dtype=np.float32))
    P = torch.from_numpy(np.ascontiguousarray(pair_vecs, dtype=np.float32))
    scale = 1.0 / cfg.temperature
    eye = torch.eye(d)

    def loss_of(di: np.ndarray, pi: np.ndarray) -> tuple[torch.Tensor, float]:
        a = torch.nn.functional.normalize(D[di] @ W, dim=1)
        p = torch.nn.functional.normalize(P[pi] @ W, dim=1)
        logits = a @ p.T * scale
        target = torch.arange(len(di))
        acc = float((logits.argmax(1) == target).float().mean())
        # small pull toward the identity keeps the map from forgetting the base geometry
        return torch.nn.functional.cross_entropy(logits, target) + 1e-3 * ((W - eye) ** 2).sum(), acc

    def evaluate() -> tuple[float, float]:
        with torch.no_grad():
            eval_rng = np.random.default_rng([seed, 0xA14])
            losses, accs = [], []
            for di, pi in _batches(ex, cfg.batch_size, eval_rng):
                l, a = loss_of(di, pi)
                losses.append(float(l))
                accs.append(a)
            return float(np.mean(losses)), float(np.mean(accs))

    threads = torch.get_num_threads()
    # A step is a few (batch x d) @ (d x d) products: one thread does it in microseconds, while a pool of
    # threads waits on itself at every op and, on a loaded machine, takes 20x longer (33 s against 1.5 s
    # for 300 steps measured on 2 busy cores). One thread also keeps W the same whatever the thread count.
    torch.set_num_threads(1)
    try:
        before = evaluate()
        steps = 0
        with bar("aligning (adapter)", total=cfg.adapter_steps, enabled=progress) as tick:
            while steps < cfg.adapter_steps:
                for di, pi in _batches(ex, cfg.batch_size, rng):
                    loss, _ = loss_of(di, pi)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    steps += 1
                    tick(1)
                    if steps >= cfg.adapter_steps:
                        break
        after = evaluate()
    finally:
        torch.set_num_threads(threads)
    stats = {"examples": len(ex), "steps": steps, "loss_before": before[0], "loss_after": after[0],
             "batch_accuracy_before": before[1], "batch_accuracy_after": after[1]}
    return W.detach().numpy().astype(np.float32), stats


def apply_adapter(W: np.ndarray):
    """A row-chunk function mapping stored vectors through the adapter (and re-normalising)."""
    from .embed import normalize

    return lambda x: normalize(np.asarray(x, dtype=np.float32) @ W)


def train_full(model_path: str, doc_texts: Sequence[str], pair_texts: Sequence[str], ex: AlignExamples,
               cfg: AlignConfig, out_dir: Path, seed: int, max_seq_length: int | None = None,
               device: str | None = None, progress: bool = True) -> dict:
    """Fine-tune the whole embedder with MultipleNegativesRankingLoss and save it to ``out_dir``."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.losses import MultipleNegativesRankingLoss
    from sentence_transformers.training_args import BatchSamplers

    rng = np.random.default_rng([seed, 0xA15])
    anchors, positives = [], []
    for row, group in zip(ex.doc_rows, ex.pair_groups):
        for g in group:
            anchors.append(doc_texts[int(row)])
            positives.append(pair_texts[int(g)])
    perm = rng.permutation(len(anchors))
    data = Dataset.from_dict({"anchor": [anchors[i] for i in perm], "positive": [positives[i] for i in perm]})
    model = SentenceTransformer(model_path, device=device)
    if max_seq_length:
        model.max_seq_length = int(max_seq_length)
    loss = MultipleNegativesRankingLoss(model, scale=1.0 / cfg.temperature)
    ckpt = out_dir.parent / (out_dir.name + ".trainer")
    steps = cfg.epochs * -(-len(anchors) // cfg.batch_size)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(ckpt), num_train_epochs=cfg.epochs, per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate, warmup_steps=max(1, int(0.1 * steps)), seed=seed, data_seed=seed,
        batch_sampler=BatchSamplers.NO_DUPLICATES, save_strategy="no", report_to=[], logging_steps=50,
        disable_tqdm=not progress, dataloader_num_workers=0, use_cpu=(device == "cpu"),
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=loss)
    result = trainer.train()
    model.save(str(out_dir))
    import shutil

    shutil.rmtree(ckpt, ignore_errors=True)  # the trainer's scratch folder (nothing is saved there)
    return {"examples": len(anchors), "train_loss": float(result.training_loss), "epochs": cfg.epochs}
