"""Evaluation helpers: how on-target a run's selection is, given a label the pipeline never reads.

Selection never looks at labels; these functions are for tests, benchmarks
and users who hold a labelled sample of their corpus.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterable

from .io import read_jsonl


def labels_by_id(corpus_jsonl: str | Path, label_field: str, id_field: str = "id") -> dict[str, str]:
    out = {}
    with open(corpus_jsonl, "rb") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and id_field in rec:
                out[str(rec[id_field])] = rec.get(label_field)
    return out


def bandit_doc_ids(run_dir: str | Path) -> list[str]:
    """Document ids extracted by the bandit rounds (warm-up excluded), in order."""
    return [d for r in read_jsonl(Path(run_dir) / "rounds.jsonl") for d in r["doc_ids"]]


def on_target_fraction(doc_ids: Iterable[str], labels: dict[str, str], target: str) -> float:
    ids = list(doc_ids)
    if not ids:
        return float("nan")
    return sum(labels.get(i) == target for i in ids) / len(ids)


def label_mix(doc_ids: Iterable[str], labels: dict[str, str]) -> dict[str, int]:
    return dict(Counter(labels.get(i) for i in doc_ids))
