"""The extraction table: every document of a corpus extracted once, with its pairs and their vectors.

Layout of a table folder::

    meta.json      extractor and embedder fingerprints, corpus key, sizes, complete flag
    docs.jsonl     one line per document, corpus order: doc_id, status, tokens, pairs [[q, a], ...]
    vectors.f32    the pairs' vectors, document after document (a float32 journal, memory-mapped to read)
    progress.json  committed sizes of the two journals (resume point)
    pairs.jsonl    the same pairs as a pairs file (``--extractor file --set extract.file.path=...``), written
                   when the table completes

Pairs are embedded one document per encode call (as a live run does), so a
replay gets the vectors a live run would. Extraction goes through the
extractor's own cache, and the table itself resumes from its last committed
batch.
"""

from __future__ import annotations

from ..errors import UserError

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..io import Journal, atomic_write_json, read_json
from ..types import QAPair

TABLE_VERSION = 2  # 2: every pair embedded in a forward pass of its own


class TableError(UserError, ValueError):
    """The table is missing, incomplete or was built with another extractor/embedder/corpus."""


@dataclass
class ExtractionTable:
    """A finished table, loaded: per document its id, status, tokens and pairs; pair vectors memory-mapped."""

    path: Path
    meta: dict[str, Any]
    doc_ids: list[str]
    status: list[str]
    tokens: np.ndarray  # (n,)
    n_pairs: np.ndarray  # (n,)
    offsets: np.ndarray  # (n + 1,)
    vectors: np.ndarray  # (total pairs, dim) memmap
    _pairs: list[list[list[str]]]

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    def __len__(self) -> int:
        return len(self.doc_ids)

    def vectors_of(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return np.zeros((0, self.dim), np.float32)
        idx = np.concatenate([np.arange(self.offsets[r], self.offsets[r + 1]) for r in rows])
        return np.asarray(self.vectors[idx], dtype=np.float32)

    def pairs_of(self, row: int) -> list[QAPair]:
        return [QAPair(q, a, doc_id=self.doc_ids[row]) for q, a in self._pairs[row]]

    def all_pairs(self) -> list[tuple[str, str]]:
        """Every (question, answer) of the table, in the order of ``vectors``."""
        return [(q, a) for ps in self._pairs for q, a in ps]

    def questions_of(self, rows: np.ndarray, keep: np.ndarray | None = None) -> list[str]:
        """The questions of ``rows``' pairs; with ``keep`` (per table pair), only those it keeps."""
        if keep is None:
            return [q for r in rows for q, _ in self._pairs[int(r)]]
        return [q for r in rows for j, (q, _) in enumerate(self._pairs[int(r)]) if keep[self.offsets[int(r)] + j]]

    def rows_for(self, doc_ids: list[str]) -> np.ndarray:
        """Table row of each id (-1 where the table has none)."""
        pos = {d: i for i, d in enumerate(self.doc_ids)}
        return np.array([pos.get(d, -1) for d in doc_ids], dtype=np.int64)

    @classmethod
    def load(cls, path: str | Path) -> "ExtractionTable":
        path = Path(path)
        meta = read_json(path / "meta.json")
        if meta is None:
            raise TableError(f"{path} holds no extraction table (no meta.json); build it with `equal extract-all`")
        if not meta.get("complete"):
            raise TableError(f"the extraction table in {path} is incomplete; run the same `equal extract-all` "
                             f"command again to finish it")
        prog = read_json(path / "progress.json", {})
        doc_ids, status, tokens, n_pairs, pairs = [], [], [], [], []
        with open(path / "docs.jsonl", "rb") as f:
            data = f.read(int(prog["docs_bytes"]))
        for line in data.splitlines():
            r = json.loads(line)
            doc_ids.append(r["doc_id"])
            status.append(r["status"])
            tokens.append(int(r.get("tokens", 0)))
            n_pairs.append(len(r["pairs"]))
            pairs.append(r["pairs"])
        n_pairs_a = np.array(n_pairs, dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(n_pairs_a)]).astype(np.int64)
        dim = int(meta["dim"])
        total = int(offsets[-1])
        vec = (np.memmap(path / "vectors.f32", dtype=np.float32, mode="r", shape=(total, dim)) if total
               else np.zeros((0, dim), np.float32))
        return cls(path, meta, doc_ids, status, np.array(tokens, dtype=np.int64), n_pairs_a, offsets, vec, pairs)


def build_table(out: str | Path, corpus, extract, encode, dim: int, key: dict[str, Any], batch: int = 64,
                progress: bool = True, check_stop=None, say=print, pulls=None) -> Path:
    """Extract every document of ``corpus`` into a table at ``out`` (resuming a partial one with the same key).

    ``extract(docs)`` returns one Extraction per document; ``encode(texts)`` embeds each text on its own; ``key`` holds the
    extractor, embedder and corpus fingerprints that must match to resume or reuse. ``pulls(rows)``, when given,
    yields the PullResult of each batch of ``batch`` rows of ``rows`` in order instead (an executor's workers
    extracting them, :mod:`equal.executors`).
    """
    from ..executors import extract_batches
    from ..progress import bar

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = read_json(out / "meta.json")
    if meta is not None and meta.get("key") != key:
        raise TableError(f"{out} holds a table built with another extractor, embedder or corpus; "
                         f"use another --out")
    if meta is None:
        for name in ("docs.jsonl", "vectors.f32", "progress.json"):
            (out / name).unlink(missing_ok=True)
        meta = {"version": TABLE_VERSION, "key": key, "n_docs": len(corpus), "dim": dim, "complete": False}
        atomic_write_json(out / "meta.json", meta)
    if meta.get("complete"):
        if not (out / PAIRS_FILE).exists():  # a table finished before pairs files were written
            write_table_pairs(out, int(read_json(out / "progress.json")["docs_bytes"]), meta)
        say(f"extraction table in {out} is complete; nothing to do")
        return out
    docs_j, vec_j = Journal(out / "docs.jsonl"), Journal(out / "vectors.f32")
    prog = read_json(out / "progress.json", {"docs": 0, "docs_bytes": 0, "vec_bytes": 0})
    docs_j.truncate(int(prog["docs_bytes"]))
    vec_j.truncate(int(prog["vec_bytes"]))
    if prog["docs"]:
        say(f"resuming the extraction table in {out} at document {prog['docs']}")
    n = len(corpus)
    rows = np.arange(int(prog["docs"]), n, dtype=np.int64)
    results = pulls(rows) if pulls is not None else (
        p.result for p in extract_batches(rows, batch, corpus.get, extract, encode, dim, check_stop))
    with bar("extracting every document", total=n, enabled=progress) as tick:
        tick(int(prog["docs"]))
        for s, res in zip(range(int(prog["docs"]), n, batch), results):
            if int(res.rows[0]) != s:
                raise RuntimeError(f"extraction batch at row {int(res.rows[0])} where {s} was due")
            recs = [{"doc_id": d, "status": st, "tokens": int(t), "pairs": [[p.question, p.answer] for p in ps]}
                    for d, st, t, ps in zip(res.doc_ids, res.status, res.tokens, res.pairs)]
            docs_j.append(recs)
            vec_j.append_bytes(res.vectors.astype(np.float32).tobytes())
            prog = {"docs": s + len(res), "docs_bytes": docs_j.size(), "vec_bytes": vec_j.size()}
            atomic_write_json(out / "progress.json", prog)
            tick(len(res))
    write_table_pairs(out, int(read_json(out / "progress.json")["docs_bytes"]), meta)
    meta["complete"] = True
    atomic_write_json(out / "meta.json", meta)
    return out


PAIRS_FILE = "pairs.jsonl"


def write_table_pairs(out: Path, docs_bytes: int, meta: dict[str, Any]) -> Path:
    """``pairs.jsonl`` beside the table: its pairs as a pairs file that ``--extractor file`` reads back (a failed
    document gets no line, so it reads back as failed; an empty one an empty list). Each pair names the
    table's extractor."""
    from ..extract.file import write_pairs_file

    fp = meta.get("key", {}).get("extractor")
    name = fp.get("name") if isinstance(fp, dict) else None
    tag = {"extractor": name} if isinstance(name, str) and name else {}

    def records():
        with open(out / "docs.jsonl", "rb") as f:
            data = f.read(docs_bytes)
        for line in data.splitlines():
            r = json.loads(line)
            yield r["doc_id"], r["status"], [{"question": q, "answer": a, **tag} for q, a in r["pairs"]]

    write_pairs_file(out / PAIRS_FILE, records())
    return out / PAIRS_FILE


def extract_all(cfg, out: str | Path, progress: bool = True, extractor=None, say=print) -> Path:
    """``equal extract-all``: build (or resume) the extraction table of ``cfg.corpus`` at ``out`` (with
    ``executor: ray``, on Ray workers, each with an extractor made from the config, unless ``extractor`` is
    given)."""
    from ..corpus import Corpus
    from ..embed import from_config
    from ..executors import merge_stats
    from ..extract.registry import make_extractor
    from ..vectors import cache_root

    out = Path(out)
    # a table keeps every pair: replays apply extract.drop_rules as a mask (ReplayEnv), so one table serves
    # runs with and without the rules
    cfg = replace(cfg, extract=replace(cfg.extract, drop_rules=[]))
    corpus = Corpus(cfg.corpus, cfg.corpus_options, index_dir=out / "index", progress=progress)
    ex = extractor or make_extractor(cfg.extract)
    try:
        emb = from_config(cfg.embed, cache_root(cfg), progress)
        key = {"extractor": ex.fingerprint(), "embedder": emb.fingerprint(), "corpus": corpus.content_key(),
               "n_docs": len(corpus)}
        pulls, executor, remote = None, None, {}
        if cfg.executor != "local" and extractor is None:
            from ..executors import make_executor

            executor = make_executor(cfg, progress=progress, say=say)

            def pulls(rows):
                for p in executor.extract(corpus, rows, cfg.extract.batch_docs, ex, emb):
                    remote.update(merge_stats(remote, p.stats))
                    yield p.result
        try:
            build_table(out, corpus, ex.extract, emb.encode_each, emb.dim, key, batch=cfg.extract.batch_docs,
                        progress=progress, say=say, pulls=pulls)
        finally:
            if executor is not None:
                executor.close()
        stats = merge_stats(ex.stats(), remote)
        meta = read_json(out / "meta.json")
        meta["extractor_stats"] = stats
        atomic_write_json(out / "meta.json", meta)
    finally:
        ex.close()
    return out
