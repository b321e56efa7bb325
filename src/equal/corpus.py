"""Corpus readers: JSONL, Parquet, and Hugging Face datasets saved to disk.

A :class:`Corpus` is built once by streaming over the source and keeping, for
each valid document, only its position (a byte offset for JSONL, a row number
otherwise). Texts are read back on demand, in batches, so millions of
documents never sit in memory at once. Bad records are counted by reason in
:attr:`Corpus.skipped`, never fatal.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .config import CorpusConfig
from .types import Document


class CorpusError(ValueError):
    """The corpus cannot be read at all (a user error, reported in one line)."""


def detect_format(path: Path, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            return "hf"
        if any(path.glob("*.parquet")):
            return "parquet"
        raise CorpusError(f"cannot tell the corpus format of folder {path}: no .parquet files and no saved dataset")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    raise CorpusError(f"cannot tell the corpus format of {path} from its suffix; set corpus_options.format")


def content_id(text: str) -> str:
    return "doc-" + hashlib.sha1(text.encode("utf-8", "replace")).hexdigest()[:16]


@dataclass
class _Raw:
    pos: int
    record: Any  # a dict, or None when the raw record could not be parsed
    problem: str = ""  # a skip reason found while parsing ("malformed_json", ...)
    note: str = ""  # a counted, non-fatal repair ("invalid_utf8")


class _Source:
    """Yields raw records with positions and fetches them back by position."""

    def fingerprint(self) -> dict[str, Any]:
        raise NotImplementedError

    def scan(self) -> Iterator[_Raw]:
        raise NotImplementedError

    def fetch(self, positions: list[int]) -> list[_Raw]:
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - trivial
        pass


def _file_fingerprint(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


class _JsonlSource(_Source):
    def __init__(self, path: Path) -> None:
        self.path = path

    def fingerprint(self) -> dict[str, Any]:
        return _file_fingerprint(self.path)

    @staticmethod
    def _parse(line: bytes, pos: int) -> _Raw:
        note = ""
        try:
            s = line.decode("utf-8")
        except UnicodeDecodeError:
            s = line.decode("utf-8", errors="replace")
            note = "invalid_utf8"
        s = s.strip()
        if not s:
            return _Raw(pos, None, "blank_line", note)
        try:
            rec = json.loads(s)
        except (json.JSONDecodeError, RecursionError):
            return _Raw(pos, None, "malformed_json", note)
        if not isinstance(rec, dict):
            return _Raw(pos, None, "not_an_object", note)
        return _Raw(pos, rec, "", note)

    def scan(self) -> Iterator[_Raw]:
        pos = 0
        with open(self.path, "rb") as f:
            for line in f:
                yield self._parse(line, pos)
                pos += len(line)

    def fetch(self, positions: list[int]) -> list[_Raw]:
        out = []
        with open(self.path, "rb") as f:
            for pos in positions:
                f.seek(int(pos))
                out.append(self._parse(f.readline(), int(pos)))
        return out


class _ArrowTableSource(_Source):
    """Row-addressed sources: Parquet files or a saved Hugging Face dataset."""

    def __init__(self, path: Path, fmt: str, text_field: str) -> None:
        self.path = path
        self.fmt = fmt
        if fmt == "parquet":
            import pyarrow.parquet as pq

            files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
            if not files:
                raise CorpusError(f"no .parquet files in {path}")
            try:
                self._files = [pq.ParquetFile(str(f)) for f in files]
            except Exception as e:  # pyarrow raises several types for a bad file
                raise CorpusError(f"cannot read Parquet corpus {path}: {e}") from None
            self._paths = files
            columns = self._files[0].schema_arrow.names
            # cumulative row offsets per (file, row group)
            self._groups: list[tuple[int, int]] = []
            starts = [0]
            for fi, pf in enumerate(self._files):
                for gi in range(pf.num_row_groups):
                    self._groups.append((fi, gi))
                    starts.append(starts[-1] + pf.metadata.row_group(gi).num_rows)
            self._starts = np.asarray(starts, dtype=np.int64)
            self._cache: tuple[int, list[dict]] | None = None
        else:
            try:
                import datasets
            except ImportError:  # pragma: no cover
                raise CorpusError("reading a Hugging Face dataset needs the 'datasets' package") from None
            try:
                ds = datasets.load_from_disk(str(path))
            except Exception as e:
                raise CorpusError(f"cannot load the Hugging Face dataset at {path}: {e}") from None
            if isinstance(ds, datasets.DatasetDict):
                if "train" not in ds:
                    raise CorpusError(f"{path} holds splits {list(ds)}; save one split or name 'train'")
                ds = ds["train"]
            self._ds = ds
            columns = ds.column_names
        if text_field not in columns:
            raise CorpusError(
                f"text field '{text_field}' not found in {path}; available columns: {', '.join(columns)} "
                f"(set corpus_options.text_field)")

    def fingerprint(self) -> dict[str, Any]:
        if self.fmt == "parquet":
            return {"files": [_file_fingerprint(p) for p in self._paths]}
        return {"path": str(self.path.resolve()), "fingerprint": getattr(self._ds, "_fingerprint", ""),
                "rows": len(self._ds)}

    def scan(self) -> Iterator[_Raw]:
        pos = 0
        if self.fmt == "parquet":
            for pf in self._files:
                for batch in pf.iter_batches(batch_size=4096):
                    for rec in batch.to_pylist():
                        yield _Raw(pos, rec)
                        pos += 1
        else:
            for batch in self._ds.iter(batch_size=4096):
                keys = list(batch)
                n = len(batch[keys[0]]) if keys else 0
                for i in range(n):
                    yield _Raw(pos, {k: batch[k][i] for k in keys})
                    pos += 1

    def fetch(self, positions: list[int]) -> list[_Raw]:
        if self.fmt != "parquet":
            rows = self._ds.select([int(p) for p in positions]).to_list()
            return [_Raw(int(p), r) for p, r in zip(positions, rows)]
        out = []
        for p in positions:
            g = int(np.searchsorted(self._starts, p, side="right") - 1)
            if self._cache is None or self._cache[0] != g:
                fi, gi = self._groups[g]
                self._cache = (g, self._files[fi].read_row_group(gi).to_pylist())
            out.append(_Raw(int(p), self._cache[1][int(p - self._starts[g])]))
        return out


class Corpus:
    """Indexed, streaming access to the valid documents of a corpus.

    Parameters
    ----------
    path : str or Path
        JSONL file, Parquet file or folder, or a saved Hugging Face dataset.
    options : CorpusConfig
        Field names, size limits and format.
    index_dir : Path, optional
        Where to save and reuse the index (positions of valid documents and skip counts).
    """

    def __init__(self, path: str | Path, options: CorpusConfig | None = None, index_dir: Path | None = None,
                 progress: bool = False) -> None:
        self.path = Path(path)
        self.options = options or CorpusConfig()
        if not self.path.exists():
            raise CorpusError(f"corpus not found: {self.path}")
        self.format = detect_format(self.path, self.options.format)
        if self.format == "jsonl":
            if self.path.is_dir():
                raise CorpusError(f"{self.path} is a folder, not a JSONL file")
            self._source: _Source = _JsonlSource(self.path)
        elif self.format in ("parquet", "hf"):
            self._source = _ArrowTableSource(self.path, self.format, self.options.text_field)
        else:
            raise CorpusError(f"unknown corpus format: {self.format}")
        self.skipped: Counter[str] = Counter()
        self.notes: Counter[str] = Counter()  # repairs that kept the document (truncated, invalid_utf8)
        if not self._load_index(index_dir):
            self._build_index(progress)
            if index_dir is not None:
                self._save_index(index_dir)
        if len(self.positions) == 0:
            raise CorpusError(f"corpus {self.path} holds no usable documents (skipped: {dict(self.skipped)})")

    # ------------------------------------------------------------ index
    def _index_key(self) -> dict[str, Any]:
        o = self.options
        return {"source": self._source.fingerprint(), "text_field": o.text_field, "id_field": o.id_field,
                "max_chars": o.max_chars, "too_long": o.too_long, "min_chars": o.min_chars, "version": 1}

    def _load_index(self, index_dir: Path | None) -> bool:
        if index_dir is None:
            return False
        meta_p, pos_p = index_dir / "corpus_index.json", index_dir / "corpus_positions.npy"
        if not (meta_p.exists() and pos_p.exists()):
            return False
        try:
            meta = json.loads(meta_p.read_text())
            if meta.get("key") != json.loads(json.dumps(self._index_key())):
                return False
            self.positions = np.load(pos_p)
        except (OSError, ValueError):
            return False
        self.skipped = Counter(meta["skipped"])
        self.notes = Counter(meta["notes"])
        return True

    def _save_index(self, index_dir: Path) -> None:
        from .io import atomic_write_bytes, atomic_write_json
        import io as _io

        buf = _io.BytesIO()
        np.save(buf, self.positions)
        atomic_write_bytes(index_dir / "corpus_positions.npy", buf.getvalue())
        atomic_write_json(index_dir / "corpus_index.json",
                          {"key": self._index_key(), "skipped": dict(self.skipped), "notes": dict(self.notes),
                           "documents": int(len(self.positions))})

    def _build_index(self, progress: bool) -> None:
        from .progress import bar

        seen: set[bytes] = set()
        positions: list[int] = []
        with bar("indexing corpus", total=None, enabled=progress) as tick:
            for raw in self._source.scan():
                tick(1)
                doc, reason = self._to_document(raw, len(positions))
                if doc is None:
                    self.skipped[reason] += 1
                    continue
                key = hashlib.blake2b(doc.id.encode("utf-8", "replace"), digest_size=12).digest()
                if key in seen:
                    self.skipped["duplicate_id"] += 1
                    continue
                seen.add(key)
                positions.append(raw.pos)
        self.positions = np.asarray(positions, dtype=np.int64)

    # ------------------------------------------------------------ records
    def _to_document(self, raw: _Raw, index: int, count: bool = True) -> tuple[Document | None, str]:
        o = self.options
        if raw.note and count:
            self.notes[raw.note] += 1
        if raw.record is None:
            return None, raw.problem
        rec = raw.record
        text = rec.get(o.text_field)
        if text is None:
            return None, "missing_text"
        if not isinstance(text, str):
            return None, "non_string_text"
        stripped = len(text.strip())
        if stripped < max(1, o.min_chars):
            return None, "empty_text"
        if len(text) > o.max_chars:
            if o.too_long == "skip":
                return None, "too_long"
            text = text[: o.max_chars]
            if count:
                self.notes["truncated"] += 1
        raw_id = rec.get(o.id_field)
        if raw_id is None or (isinstance(raw_id, str) and not raw_id.strip()):
            doc_id = content_id(text)
            if count:
                self.notes["generated_id"] += 1
        elif isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool):
            doc_id = str(raw_id)
        else:
            return None, "bad_id"
        meta = {k: v for k, v in rec.items() if k not in (o.text_field, o.id_field)}
        return Document(index=index, id=doc_id, text=text, meta=meta), ""

    def __len__(self) -> int:
        return int(len(self.positions))

    def get(self, indices: list[int] | np.ndarray) -> list[Document]:
        """Documents by index (order kept)."""
        idx = [int(i) for i in indices]
        raws = self._source.fetch([int(self.positions[i]) for i in idx])
        docs = []
        for i, raw in zip(idx, raws):
            doc, reason = self._to_document(raw, i, count=False)
            if doc is None:
                raise CorpusError(f"corpus {self.path} changed since it was indexed (document {i}: {reason})")
            docs.append(doc)
        return docs

    def iter_batches(self, batch_size: int = 1024, start: int = 0, stop: int | None = None) -> Iterator[list[Document]]:
        """Stream documents ``start..stop`` in order, ``batch_size`` at a time."""
        stop = len(self) if stop is None else min(stop, len(self))
        for s in range(start, stop, batch_size):
            yield self.get(range(s, min(stop, s + batch_size)))

    def skip_counts(self) -> dict[str, int]:
        return dict(self.skipped)
