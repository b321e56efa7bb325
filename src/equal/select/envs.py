"""Environments: what pulling documents gives.

An environment extracts the documents at some corpus rows and returns their
pairs and the pairs' vectors. :class:`LiveEnv` calls the extractor and the
embedder; :class:`ReplayEnv` reads an extraction table (``equal extract-all``)
and costs nothing. Both embed every pair in a forward pass of its own
(:func:`embed_pairs`), so a vector never depends on what else was pulled with
it, and a replay matches a live run bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np

from ..types import Document, Extraction, QAPair


@dataclass
class PullResult:
    """The outcome of extracting some documents (in the order asked)."""

    rows: np.ndarray  # (m,) corpus rows
    doc_ids: list[str]
    status: list[str]  # ok | empty | failed, per document
    n_pairs: np.ndarray  # (m,) pairs per document
    vectors: np.ndarray  # (sum n_pairs, d) pair vectors, document by document
    pairs: list[list[QAPair]] = field(default_factory=list)  # per document (empty lists in a vector-only replay)
    tokens: np.ndarray | None = None  # (m,) prompt + completion tokens per document, where known

    def __len__(self) -> int:
        return len(self.rows)

    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.n_pairs)]).astype(np.int64)

    def take(self, start: int, stop: int) -> "PullResult":
        """Documents ``start:stop`` of this result, with their pairs and vectors."""
        off = self.offsets()
        return PullResult(self.rows[start:stop], self.doc_ids[start:stop], self.status[start:stop],
                          self.n_pairs[start:stop], self.vectors[off[start]: off[stop]],
                          self.pairs[start:stop] if self.pairs else [],
                          None if self.tokens is None else self.tokens[start:stop])


class Env(Protocol):
    dim: int

    def pull(self, rows: np.ndarray) -> PullResult:
        """Extract the documents at ``rows``; never raises for one bad document."""
        ...


def embed_pairs(encode_each: Callable[[Sequence[str]], np.ndarray], pairs_per_doc: Sequence[Sequence[QAPair]],
                dim: int) -> np.ndarray:
    """Vectors of every pair, document after document. ``encode_each`` must embed every text on its own
    (:meth:`equal.embed.Embedder.encode_each`), so that a vector never depends on what was pulled with it."""
    texts = [p.text() for pairs in pairs_per_doc for p in pairs]
    return np.asarray(encode_each(texts), dtype=np.float32) if texts else np.zeros((0, dim), np.float32)


def status_of(res: Extraction) -> str:
    if res.status == "failed":
        return "failed"
    return "ok" if res.pairs else "empty"


class LiveEnv:
    """Extract with a real extractor (``extract(docs) -> list[Extraction]``) and embed the pairs."""

    def __init__(self, get_docs: Callable[[np.ndarray], list[Document]],
                 extract: Callable[[list[Document]], list[Extraction]],
                 encode: Callable[[Sequence[str]], np.ndarray], dim: int) -> None:
        self.get_docs, self.extract, self.encode, self.dim = get_docs, extract, encode, dim

    def pull(self, rows: np.ndarray) -> PullResult:
        rows = np.asarray(rows, dtype=np.int64)
        docs = self.get_docs(rows)
        results = self.extract(docs)
        if len(results) != len(docs):
            raise RuntimeError(f"extractor returned {len(results)} results for {len(docs)} documents")
        pairs = []
        for d, r in zip(docs, results):
            for p in r.pairs:
                p.doc_id = d.id
            pairs.append(list(r.pairs))
        tokens = np.array([int(r.stats.get("prompt_tokens", 0)) + int(r.stats.get("completion_tokens", 0))
                           for r in results], dtype=np.int64)
        return PullResult(rows=rows, doc_ids=[d.id for d in docs], status=[status_of(r) for r in results],
                          n_pairs=np.array([len(p) for p in pairs], dtype=np.int64),
                          vectors=embed_pairs(self.encode, pairs, self.dim), pairs=pairs, tokens=tokens)


class ReplayEnv:
    """Pull from an extraction table: the same pairs and vectors a live run would get, with no LLM call."""

    def __init__(self, table, rows_to_table: np.ndarray | None = None, with_pairs: bool = False,
                 keep: np.ndarray | None = None) -> None:
        self.table = table
        self.dim = table.dim
        self.rows_to_table = rows_to_table  # corpus row -> table row (None: the same)
        self.with_pairs = with_pairs
        self.keep = keep  # per table pair, whether it passes extract.drop_rules (None: every pair)
        self.calls = 0

    def pull(self, rows: np.ndarray) -> PullResult:
        rows = np.asarray(rows, dtype=np.int64)
        t = rows if self.rows_to_table is None else self.rows_to_table[rows]
        if (t < 0).any():
            missing = rows[t < 0][:3].tolist()
            raise KeyError(f"the extraction table has no entry for corpus rows {missing} (rebuild it with extract-all)")
        self.calls += len(rows)
        n = self.table.n_pairs[t]
        vec = self.table.vectors_of(t)
        pairs = [self.table.pairs_of(int(i)) for i in t] if self.with_pairs else []
        status = [self.table.status[int(i)] for i in t]
        if self.keep is not None:  # the pairs a run with extract.drop_rules would have kept
            off = self.table.offsets
            masks = [self.keep[off[i]: off[i + 1]] for i in t]
            vec = vec[np.concatenate(masks)] if len(masks) else vec
            pairs = [[p for p, k in zip(ps, m) if k] for ps, m in zip(pairs, masks)] if pairs else []
            kept = np.array([int(m.sum()) for m in masks], dtype=np.int64)
            status = ["empty" if st == "ok" and k == 0 else st for st, k in zip(status, kept)]
            n = kept
        return PullResult(rows=rows, doc_ids=[self.table.doc_ids[int(i)] for i in t],
                          status=status, n_pairs=n.astype(np.int64),
                          vectors=vec, pairs=pairs, tokens=self.table.tokens[t])
