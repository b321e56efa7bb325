"""What did selection buy: the run's documents against a random sample of as many documents, on the reward's
measure (OT distance to the reference's reward sample, the run's metric), from the run folder's files only.

A random sample's *pairs* would need an extraction (LLM calls for an LLM run); a sample of the documents the
run already extracted would be a sample of what selection chose, not of the corpus. So the comparison is made
on what both sides have without extraction: the documents' own embeddings (``state/doc_vectors.npy``, the same
embedder and space as the pairs and the reference). Both sides are measured the same way: the run's extracted
documents, and ``SEEDS`` seeded random samples of as many documents of the corpus (mean and spread). Documents
are found by id in the corpus, read once; above ``MAX_SCAN`` documents the line is left out (it says why).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .io import read_jsonl
from .score import ot_distance

SEEDS = 5
MAX_POINTS = 2000  # each side subsampled (seeded) to at most this many documents, as the OT curve is
MAX_SCAN = 300_000  # corpus documents read to map the extracted ids to rows


@dataclass
class Baseline:
    n_docs: int
    selected: float  # OT of the run's extracted documents to the reference
    random_mean: float
    random_sd: float
    seeds: int

    def line(self) -> str:
        gain = self.random_mean - self.selected
        return (f"Selection vs random: the {self.n_docs} documents this run extracted lie at OT {self.selected:.4f} "
                f"from the reference, a random sample of {self.n_docs} documents at {self.random_mean:.4f} "
                f"± {self.random_sd:.4f} ({self.seeds} seeds): selection is {abs(gain):.4f} "
                f"{'closer' if gain >= 0 else 'farther'} (lower is closer; measured on the documents' embeddings, "
                f"as a random sample's pairs would need an extraction).")


def _reference(state: Path) -> np.ndarray | None:
    if (state / "reference.npz").exists():
        with np.load(state / "reference.npz") as z:
            return z["reward"]
    if (state / "reference.npy").exists():
        return np.load(state / "reference.npy")
    return None


def _ot(vec: np.ndarray, rows: np.ndarray, ref: np.ndarray, score: dict[str, Any], seed: int) -> float:
    if len(rows) > MAX_POINTS:
        rows = np.random.default_rng([seed, 0xB5]).choice(rows, MAX_POINTS, replace=False)
    pts = np.asarray(vec[np.sort(rows)], dtype=np.float32)
    return ot_distance(pts, ref, score.get("metric", "cosine"), score.get("method", "emd"),
                       score.get("sinkhorn_reg", 0.05))


def selection_baseline(run_dir: Path, summary: dict[str, Any], corpus: Any) -> Baseline | str:
    """The comparison, or a sentence saying why there is none."""
    state = run_dir / "state"
    ref = _reference(state)
    if ref is None or not (state / "doc_vectors.npy").exists():
        return "no reference or document embeddings in state/"
    if corpus is None:
        return "the run's corpus was not found"
    vec = np.load(state / "doc_vectors.npy", mmap_mode="r")
    if len(corpus) != len(vec):
        return "the corpus no longer matches the run's embeddings"
    if len(vec) > MAX_SCAN:
        return f"the corpus has more than {MAX_SCAN:,} documents (too many to map ids to rows here)"
    wanted = {str(r["doc_id"]) for r in read_jsonl(run_dir / "extracted.jsonl") if r.get("doc_id") is not None}
    rows = []
    for start in range(0, len(vec), 4096):
        for doc in corpus.get(range(start, min(len(vec), start + 4096))):
            if str(doc.id) in wanted:
                rows.append(doc.index)
    if len(rows) < 2 or len(rows) >= len(vec):
        return "too few documents extracted, or all of them"
    rows_a = np.asarray(rows, dtype=np.int64)
    score = (summary.get("config") or {}).get("score") or {}
    selected = _ot(vec, rows_a, ref, score, 0)
    randoms = [_ot(vec, np.random.default_rng([s, 0x5E1]).choice(len(vec), len(rows_a), replace=False), ref, score, s)
               for s in range(SEEDS)]
    return Baseline(len(rows_a), selected, float(np.mean(randoms)), float(np.std(randoms)), SEEDS)
