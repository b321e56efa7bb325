"""Corpus readers: JSONL, Parquet, and Hugging Face datasets saved to disk.

A :class:`Corpus` is built once by streaming over the source and keeping, for
each valid document, only its position (a byte offset for JSONL, a row number
otherwise). Texts are read back on demand, in batches, so millions of
documents never sit in memory at once.

Bad records are never fatal. Each one is counted by reason in
:attr:`Corpus.skipped`:

``blank_line``
    an empty or whitespace-only JSONL line.
``malformed_json``
    a JSONL line that is not valid JSON (torn lines, garbage bytes, numbers
    too long to convert, nesting too deep).
``not_an_object``
    a JSONL line holding valid JSON that is not an object.
``unreadable_row``
    a Parquet / dataset row that pyarrow could not decode.
``missing_text`` / ``non_string_text``
    the text field is absent or null / holds something other than a string.
``empty_text``
    fewer than ``min_chars`` non-whitespace characters (after truncation).
``too_long``
    more than ``max_chars`` characters with ``too_long: skip``.
``bad_id``
    an id that is neither a string nor an integer.
``duplicate_id``
    an id already seen; the first document with that id is kept.
``truncated_shard:<file>`` / ``unreadable_shard:<file>``
    a compressed JSONL shard that ends mid-stream / whose stream is corrupt, or a Parquet file with an
    unreadable row group: counted once per shard, named, its readable part kept
    (``corpus_options.strict: true`` makes it an error instead).

Repairs that keep the document are counted in :attr:`Corpus.notes`:
``invalid_utf8`` (invalid bytes or lone surrogate escapes replaced by U+FFFD),
``truncated`` (cut to ``max_chars``), ``generated_id`` (no id: a content hash
of the text is used, see :func:`content_id`).

Fatal problems (no corpus file, an unreadable file, a Parquet / dataset
without the text column, a corpus with no usable document, a JSONL file in
UTF-16 or UTF-32, see :func:`equal.corpus_io.sniff_encoding`) raise
:class:`CorpusError` with a one-line message. A UTF-8 byte-order mark is
stripped.

Sharded corpora: a folder holding JSONL shards (``.jsonl``, ``.jsonl.gz``,
``.jsonl.zst``, mixed with ``.parquet`` files if need be), a glob such as
``data/part-*.jsonl.gz``, or a single compressed JSONL file is read as one
logical corpus: the shards in path order, each document at the position
``(shard << 40) | offset`` (the byte offset in the shard's decompressed JSONL
text, or the row number in a Parquet shard). Shard 0's positions are plain
offsets, so a one-file corpus keeps the positions it always had. A folder of
Parquet files alone keeps its older form (rows numbered across the files).
Compressed shards cannot seek: a random read decompresses the shard once and
keeps the last one read in memory, so uncompressed JSONL or Parquet shards
read faster during selection.

The index (positions and counts) can be saved in ``index_dir`` and is reused
when the source's fingerprint (path, size, modification time, a hash of its
first and last 64 KiB) and the reading options are unchanged.
"""

from __future__ import annotations

from .errors import UserError

import hashlib
import json
import logging
import math
import operator
import os
import re
from array import array
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from .config import CorpusConfig
from .corpus_io import StreamDamage, encoding_message, iter_lines, sniff_encoding
from .types import Document

log = logging.getLogger(__name__)

_INDEX_VERSION = 2
_SAMPLE_BYTES = 64 * 1024  # hashed from each end of a file for its fingerprint


class CorpusError(UserError, ValueError):
    """The corpus cannot be read at all (a user error, reported in one line)."""


def _one_line(s: Any) -> str:
    return " ".join(str(s).split())


SHARD_BITS = 40  # a position is (shard << SHARD_BITS) | offset: offsets below 1 TiB, up to 2**23 shards
_OFFSET_MASK = (1 << SHARD_BITS) - 1
_JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
_COMPRESSED = {".gz": "gz", ".zst": "zst", ".zstd": "zst"}
_GLOB_CHARS = set("*?[")


def shard_kind(path: Path) -> str | None:
    """``jsonl``, ``gz``, ``zst`` or ``parquet`` for a file that can be a shard, by its name; else None."""
    name = path.name.lower()
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(_JSONL_SUFFIXES):
        return "jsonl"
    for suf, kind in _COMPRESSED.items():
        if name.endswith(suf) and name[: -len(suf)].endswith(_JSONL_SUFFIXES):
            return kind
    return None


def _is_plain_json(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".json") or any(name.endswith(".json" + suf) for suf in _COMPRESSED)


def is_glob(spec: str | Path) -> bool:
    return bool(_GLOB_CHARS & set(str(spec))) and not Path(spec).exists()


def list_shards(spec: str | Path, jsonl_only: bool = False) -> list[Path]:
    """The shard files of a folder (searched recursively) or a glob, in path order."""
    import glob

    if is_glob(spec):
        found = [Path(p) for p in glob.glob(str(spec), recursive=True)]
    else:  # in a folder, plain .json files (metadata, schemas) are not taken for shards; a glob may name them
        found = [p for p in Path(spec).rglob("*") if not _is_plain_json(p)]
    files = sorted((p for p in found if p.is_file() and shard_kind(p)), key=lambda p: str(p))
    if jsonl_only:
        files = [p for p in files if shard_kind(p) != "parquet"]
    return files


def detect_format(path: Path, fmt: str = "auto") -> str:
    path = Path(path)
    if is_glob(path):
        return "shards"
    if path.is_dir():
        if fmt == "jsonl":
            return "shards"
        if fmt != "auto":
            return fmt
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            return "hf"
        kinds = {shard_kind(p) for p in path.rglob("*") if p.is_file() and not _is_plain_json(p)} - {None}
        if kinds == {"parquet"} and any(path.glob("*.parquet")):
            return "parquet"  # a folder of Parquet files only: rows numbered across the files, as always
        if kinds:
            return "shards"
        raise CorpusError(f"cannot tell the corpus format of folder {path}: no .parquet or .jsonl[.gz|.zst] "
                          f"files and no saved dataset")
    if fmt != "auto":
        return fmt
    kind = shard_kind(path)
    if kind == "parquet":
        return "parquet"
    if kind == "jsonl":
        return "jsonl"
    if kind in ("gz", "zst"):
        return "shards"  # one compressed JSONL file: a corpus of one shard
    raise CorpusError(f"cannot tell the corpus format of {path} from its suffix; set corpus_options.format")


def content_id(text: str) -> str:
    return "doc-" + hashlib.sha1(text.encode("utf-8", "replace")).hexdigest()[:16]


# ---------------------------------------------------------------- text repair
_SURROGATE = re.compile("[\ud800-\udfff]")


def _replace_surrogates(value: Any) -> tuple[Any, bool]:
    """``value`` with lone surrogates (from ``\\udXXX`` JSON escapes) replaced by U+FFFD, recursively.

    Such strings cannot be encoded as UTF-8, so they would break every later
    write. Returns the repaired value and whether anything changed.
    """
    if isinstance(value, str):
        fixed = _SURROGATE.sub("\ufffd", value)
        return fixed, fixed != value
    if isinstance(value, dict):
        changed = False
        out = {}
        for k, v in value.items():
            k2, c1 = _replace_surrogates(k)
            v2, c2 = _replace_surrogates(v)
            out[k2] = v2
            changed = changed or c1 or c2
        return out, changed
    if isinstance(value, list):
        items = [_replace_surrogates(v) for v in value]
        return [v for v, _ in items], any(c for _, c in items)
    return value, False


def _has_min_chars(text: str, min_chars: int) -> bool:
    """Whether ``text`` holds at least ``max(1, min_chars)`` non-whitespace characters."""
    if min_chars <= 1:
        return not text.isspace() and bool(text)
    if len(text) < min_chars:
        return False
    return sum(map(len, text.split())) >= min_chars


# ---------------------------------------------------------------- sources
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
    """Path, size, mtime and a hash of the first and last 64 KiB: cheap, and it sees
    rewrites that keep the size and land within the file system's clock tick."""
    st = path.stat()
    h = hashlib.sha1()
    with open(path, "rb") as f:
        h.update(f.read(_SAMPLE_BYTES))
        if st.st_size > _SAMPLE_BYTES:
            f.seek(max(_SAMPLE_BYTES, st.st_size - _SAMPLE_BYTES))
            h.update(f.read(_SAMPLE_BYTES))
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sample_sha1": h.hexdigest()}


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
        s = s.strip().lstrip("\ufeff")  # a byte-order mark is tolerated (first line of some exports)
        if not s:
            return _Raw(pos, None, "blank_line", note)
        try:
            rec = json.loads(s)
        except (ValueError, RecursionError):  # JSONDecodeError, int digit limit, deep nesting
            return _Raw(pos, None, "malformed_json", note)
        if not isinstance(rec, dict):
            return _Raw(pos, None, "not_an_object", note)
        if b"\\ud" in line or b"\\uD" in line:  # maybe a lone surrogate escape
            rec, changed = _replace_surrogates(rec)
            if changed:
                note = "invalid_utf8"
        return _Raw(pos, rec, "", note)

    def scan(self) -> Iterator[_Raw]:
        pos = 0
        parse = self._parse
        with open(self.path, "rb") as f:
            for line in f:
                if pos == 0:
                    _check_encoding(self.path, "jsonl", line)
                yield parse(line, pos)
                pos += len(line)

    def fetch(self, positions: list[int]) -> list[_Raw]:
        out = []
        with open(self.path, "rb") as f:
            for pos in positions:
                f.seek(pos)
                out.append(self._parse(f.readline(), pos))
        return out


def _check_encoding(path: Path, kind: str, first_line: bytes) -> None:
    found = sniff_encoding(first_line[:64])
    if found:
        raise CorpusError(encoding_message(path, kind, found))


class _CompressedJsonlSource(_JsonlSource):
    """A gzip- or zstd-compressed JSONL file; positions are byte offsets in its decompressed text.

    Such a stream cannot seek, so :meth:`fetch` decompresses the file once and keeps it (the last
    compressed shard read) in memory."""

    _cache: tuple[Path, bytes] | None = None  # shared by all instances: one decompressed shard at a time

    def __init__(self, path: Path, kind: str, label: str | None = None) -> None:
        super().__init__(path)
        self.kind = kind
        self.label = label or path.name  # how the shard is named in the skip counts

    def scan(self) -> Iterator[_Raw]:
        pos = 0
        parse = self._parse
        try:
            for line in iter_lines(self.path, self.kind):
                if pos == 0:
                    _check_encoding(self.path, self.kind, line)
                yield parse(line, pos)
                pos += len(line)
        except StreamDamage as e:  # a truncated or corrupt stream: keep what was read before it, and say so
            log.warning("corpus shard %s: compressed stream %s after %d bytes (%s)", self.path, e.kind, pos,
                        _one_line(e.detail))
            yield _Raw(pos, None, f"{e.kind}_shard:{self.label}")

    def _data(self) -> bytes:
        cache = _CompressedJsonlSource._cache
        if cache is not None and cache[0] == self.path:
            return cache[1]
        _CompressedJsonlSource._cache = None  # free the previous shard first
        chunks: list[bytes] = []
        try:
            chunks.extend(iter_lines(self.path, self.kind))  # line by line, as scan read it
        except StreamDamage:  # the readable part is what scan indexed
            pass
        data = b"".join(chunks)
        _CompressedJsonlSource._cache = (self.path, data)
        return data

    def fetch(self, positions: list[int]) -> list[_Raw]:
        if not positions:
            return []
        data = self._data()
        out = []
        for pos in positions:
            end = data.find(b"\n", pos)
            out.append(self._parse(data[pos: len(data) if end < 0 else end + 1], pos))
        return out


class _ShardedSource(_Source):
    """Several shard files (JSONL, compressed JSONL, Parquet) read as one corpus, in path order.

    A position packs the shard number and the position inside the shard: ``(shard << SHARD_BITS) | offset``."""

    def __init__(self, files: list[Path], text_field: str) -> None:
        if not files:
            raise CorpusError("no corpus shards found")
        if len(files) >= 1 << (63 - SHARD_BITS):
            raise CorpusError(f"too many corpus shards ({len(files)})")
        self.files = files
        self._text_field = text_field
        self._sources: dict[int, _Source] = {}
        root = Path(os.path.commonpath([str(f.parent) for f in files]))
        self._labels = [f.relative_to(root).as_posix() for f in files]  # shard names in the skip counts
        for i, f in enumerate(files):
            if shard_kind(f) == "parquet":
                self._source(i)  # opened now: a bad file or a missing text column is reported at once

    def _source(self, i: int) -> _Source:
        src = self._sources.get(i)
        if src is None:
            f = self.files[i]
            kind = shard_kind(f)
            if kind == "parquet":
                src = _ParquetSource(f, self._text_field)
            elif kind in ("gz", "zst"):
                src = _CompressedJsonlSource(f, kind, self._labels[i])
            else:
                src = _JsonlSource(f)
            self._sources[i] = src
        return src

    def fingerprint(self) -> dict[str, Any]:
        return {"shards": [_file_fingerprint(p) for p in self.files]}

    def scan(self) -> Iterator[_Raw]:
        for i, f in enumerate(self.files):
            base = i << SHARD_BITS
            for raw in self._source(i).scan():
                if raw.pos > _OFFSET_MASK:
                    raise CorpusError(f"corpus shard {f} is too large (over {_OFFSET_MASK} bytes)")
                raw.pos |= base
                yield raw

    def fetch(self, positions: list[int]) -> list[_Raw]:
        if not positions:
            return []
        pos = np.asarray(positions, dtype=np.int64)
        shards = pos >> SHARD_BITS
        local = pos & _OFFSET_MASK
        out: list[_Raw | None] = [None] * len(positions)
        for sh in dict.fromkeys(shards.tolist()):  # each shard once per call, in the order first asked
            where = np.nonzero(shards == sh)[0]
            for w, raw in zip(where.tolist(), self._source(int(sh)).fetch(local[where].tolist())):
                raw.pos = int(pos[w])
                out[w] = raw
        return out  # type: ignore[return-value]

    def shard_of(self, positions: np.ndarray) -> np.ndarray:
        return np.asarray(positions, dtype=np.int64) >> SHARD_BITS


class _ParquetSource(_Source):
    """Row-addressed Parquet file, or a folder of them read in name order."""

    def __init__(self, path: Path, text_field: str) -> None:
        import pyarrow.parquet as pq

        self.path = path
        files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
        if not files:
            raise CorpusError(f"no .parquet files in {path}")
        self._files = []
        for f in files:
            try:
                self._files.append(pq.ParquetFile(str(f)))
            except Exception as e:  # pyarrow raises several types for a bad file
                raise CorpusError(f"cannot read Parquet file {f}: {_one_line(e)}") from None
        self._paths = files
        if not any(text_field in pf.schema_arrow.names for pf in self._files):
            columns = self._files[0].schema_arrow.names
            raise CorpusError(
                f"text field '{text_field}' not found in {path}; available columns: {', '.join(columns)} "
                f"(set corpus_options.text_field)")
        # row offsets per (file, row group)
        self._groups: list[tuple[int, int]] = []
        starts = [0]
        for fi, pf in enumerate(self._files):
            for gi in range(pf.num_row_groups):
                self._groups.append((fi, gi))
                starts.append(starts[-1] + pf.metadata.row_group(gi).num_rows)
        self._starts = np.asarray(starts, dtype=np.int64)
        self._cache: tuple[int, Any] | None = None  # (group, pyarrow.Table) last read by fetch

    def fingerprint(self) -> dict[str, Any]:
        return {"files": [_file_fingerprint(p) for p in self._paths]}

    def scan(self) -> Iterator[_Raw]:
        for g, (fi, gi) in enumerate(self._groups):
            pos, end = int(self._starts[g]), int(self._starts[g + 1])
            try:
                for batch in self._files[fi].iter_batches(batch_size=4096, row_groups=[gi]):
                    try:
                        rows = batch.to_pylist()
                    except Exception:  # e.g. invalid UTF-8 in a string column: find the bad rows
                        rows = []
                        for i in range(batch.num_rows):
                            try:
                                rows.append(batch.slice(i, 1).to_pylist()[0])
                            except Exception:
                                rows.append(None)
                    for rec in rows:
                        yield _Raw(pos, rec) if rec is not None else _Raw(pos, None, "unreadable_row")
                        pos += 1
            except Exception as e:  # a corrupt row group: count its remaining rows, name the file, go on
                log.warning("corpus %s: row group %d of %s unreadable (%s)", self.path, gi, self._paths[fi],
                            _one_line(e))
                yield _Raw(pos, None, f"unreadable_shard:{self._paths[fi].name}")
            while pos < end:
                yield _Raw(pos, None, "unreadable_row")
                pos += 1

    def _group_table(self, g: int) -> Any:
        cache = self._cache
        if cache is not None and cache[0] == g:
            return cache[1]
        fi, gi = self._groups[g]
        table = self._files[fi].read_row_group(gi)
        self._cache = (g, table)
        return table

    def fetch(self, positions: list[int]) -> list[_Raw]:
        if not positions:
            return []
        pos = np.asarray(positions, dtype=np.int64)
        groups = np.searchsorted(self._starts, pos, side="right") - 1
        out: list[_Raw | None] = [None] * len(positions)
        # each row group is read once per call, whatever the order asked
        for g in dict.fromkeys(groups.tolist()):
            where = np.nonzero(groups == g)[0]
            table = self._group_table(g)
            rows = table.take(pos[where] - self._starts[g]).to_pylist()
            for w, rec in zip(where.tolist(), rows):
                out[w] = _Raw(int(pos[w]), rec)
        return out  # type: ignore[return-value]


class _HFSource(_Source):
    """A Hugging Face dataset saved with ``save_to_disk`` (a DatasetDict must have a 'train' split)."""

    def __init__(self, path: Path, text_field: str) -> None:
        try:
            import datasets
        except ImportError:  # pragma: no cover
            raise CorpusError("reading a Hugging Face dataset needs the 'datasets' package") from None
        self.path = path
        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as e:
            raise CorpusError(f"cannot load the Hugging Face dataset at {path}: {_one_line(e)}") from None
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise CorpusError(f"{path} holds splits {', '.join(ds)}; save one split or name one 'train'")
            ds = ds["train"]
        self._ds = ds.with_format(None)  # plain Python values, whatever format it was saved with
        columns = ds.column_names
        if text_field not in columns:
            raise CorpusError(
                f"text field '{text_field}' not found in {path}; available columns: {', '.join(columns)} "
                f"(set corpus_options.text_field)")

    def fingerprint(self) -> dict[str, Any]:
        files = []
        for cf in getattr(self._ds, "cache_files", []) or []:
            p = Path(cf.get("filename", ""))
            if p.is_file():
                st = p.stat()
                files.append({"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
        return {"path": str(self.path.resolve()), "fingerprint": getattr(self._ds, "_fingerprint", ""),
                "rows": len(self._ds), "files": files}

    def scan(self) -> Iterator[_Raw]:
        pos = 0
        for batch in self._ds.iter(batch_size=4096):
            keys = list(batch)  # never empty: the text column is there
            for values in zip(*(batch[k] for k in keys)):
                yield _Raw(pos, dict(zip(keys, values)))
                pos += 1

    def fetch(self, positions: list[int]) -> list[_Raw]:
        if not positions:
            return []
        rows = self._ds.select(positions).to_list()
        return [_Raw(p, r) for p, r in zip(positions, rows)]


# ---------------------------------------------------------------- corpus
class Corpus:
    """Indexed, streaming access to the valid documents of a corpus.

    Parameters
    ----------
    path : str or Path
        JSONL file (optionally ``.gz`` / ``.zst``), Parquet file or folder, a folder or glob of JSONL /
        Parquet shards, or a saved Hugging Face dataset.
    options : CorpusConfig
        Field names, size limits and format.
    index_dir : Path, optional
        Where to save and reuse the index (positions of valid documents and
        skip counts), keyed by a fingerprint of the source and the options.
    progress : bool
        Show a progress bar while indexing.

    Attributes
    ----------
    format : str
        ``jsonl``, ``parquet``, ``hf`` or ``shards``.
    positions : numpy.ndarray
        int64 position (JSONL byte offset or row number; for shards ``(shard << 40) | offset``) of each
        valid document.
    skipped : Counter
        Records left out, by reason (see the module docstring).
    notes : Counter
        Repairs made to documents that were kept, by kind.
    """

    def __init__(self, path: str | Path, options: CorpusConfig | None = None, index_dir: Path | None = None,
                 progress: bool = False) -> None:
        self.path = Path(path)
        self.options = options or CorpusConfig()
        self._check_options()
        if not self.path.exists() and not is_glob(path):
            raise CorpusError(f"corpus not found: {self.path}")
        self.format = detect_format(self.path, self.options.format)
        shards = None
        if self.format == "shards":
            shards = list_shards(path, jsonl_only=self.options.format == "jsonl") if not self.path.is_file() \
                else [self.path]
            if not shards:
                what = "files match" if is_glob(path) else "JSONL or Parquet files in the folder"
                raise CorpusError(f"corpus not found: no {what} {path}")
        self._source: _Source = self._open_source(shards)
        self.shards = getattr(self._source, "files", None) or [self.path]
        self.skipped: Counter[str] = Counter()
        self.notes: Counter[str] = Counter()  # repairs that kept the document (truncated, invalid_utf8, generated_id)
        self._fields_seen: list[str] | None = None  # fields of the first record without the text field
        try:
            key = self._index_key()
        except OSError as e:
            raise CorpusError(f"cannot read corpus {self.path}: {_one_line(e.strerror or e)}") from None
        index_dir = Path(index_dir) if index_dir is not None else None
        if not self._load_index(index_dir, key):
            self._build_index(progress)
            if index_dir is not None and len(self.positions):
                self._save_index(index_dir, key)
        self._check_damage()
        if len(self.positions) == 0:
            raise CorpusError(self._no_documents_message())

    def damaged_shards(self) -> dict[str, str]:
        """Shards whose data could not be read to the end: ``{name: "truncated" | "unreadable"}``."""
        return {k.split(":", 1)[1]: k.split("_shard:", 1)[0] for k in self.skipped
                if k.startswith(("truncated_shard:", "unreadable_shard:"))}

    def _check_damage(self) -> None:
        damaged = self.damaged_shards()
        if damaged and self.options.strict:
            name, kind = next(iter(damaged.items()))
            more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
            what = "is cut off mid-stream" if kind == "truncated" else "cannot be read to its end"
            raise CorpusError(f"corpus shard {name} of {self.path} {what}{more}; corpus_options.strict is set: "
                              f"repair or replace it, or set strict: false to keep its readable part")

    def _open_source(self, shards: list[Path] | None) -> _Source:
        if self.format == "shards":
            return _ShardedSource(list(shards or []), self.options.text_field)
        if self.format == "jsonl":
            if self.path.is_dir():
                raise CorpusError(f"{self.path} is a folder, not a JSONL file")
            return _JsonlSource(self.path)
        if self.format == "parquet":
            return _ParquetSource(self.path, self.options.text_field)
        if self.format == "hf":
            return _HFSource(self.path, self.options.text_field)
        raise CorpusError(f"unknown corpus format: {self.format} (use jsonl, parquet, hf or auto)")

    # A Corpus travels to other processes (Ray workers) as its index and options: the source is opened again
    # there, from the same files (the shard list is kept, never listed again), without a scan.
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_source", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._source = self._open_source(self.shards if self.format == "shards" else None)

    def _check_options(self) -> None:
        o = self.options
        if not isinstance(o.max_chars, int) or o.max_chars < 1:
            raise CorpusError(f"corpus_options.max_chars must be a positive integer, got {o.max_chars!r}")
        if o.too_long not in ("truncate", "skip"):
            raise CorpusError(f"corpus_options.too_long must be truncate or skip, got {o.too_long!r}")
        if not o.text_field or o.text_field == o.id_field:
            raise CorpusError("corpus_options.text_field must be set and differ from id_field")

    def _no_documents_message(self) -> str:
        if not self.skipped:
            return f"corpus {self.path} holds no documents (it is empty)"
        counts = ", ".join(f"{k}={v}" for k, v in self.skipped.most_common())
        msg = f"corpus {self.path} holds no usable documents (skipped: {counts})"
        if self._fields_seen is not None and self.skipped.get("missing_text", 0) == max(self.skipped.values()):
            fields = ", ".join(_one_line(f) for f in self._fields_seen[:20]) or "none"  # field names may hold newlines
            msg += (f"; records have no '{self.options.text_field}' field (fields seen: {fields}), "
                    f"set corpus_options.text_field")
        return msg

    # ------------------------------------------------------------ index
    def content_key(self) -> str:
        """A short hash of the source's fingerprint, the reading options and the valid positions.

        Two Corpus objects with the same key hold the same documents in the same
        order, so caches keyed by it (the corpus embedding cache) can be shared.
        """
        h = hashlib.sha1(json.dumps(self._index_key(), sort_keys=True).encode())
        h.update(np.ascontiguousarray(self.positions, dtype=np.int64).tobytes())
        return h.hexdigest()[:20]

    def _index_key(self) -> dict[str, Any]:
        o = self.options
        key = {"version": _INDEX_VERSION, "format": self.format, "source": self._source.fingerprint(),
               "text_field": o.text_field, "id_field": o.id_field, "max_chars": o.max_chars,
               "too_long": o.too_long, "min_chars": o.min_chars}
        return json.loads(json.dumps(key))  # the form it takes once saved

    def _load_index(self, index_dir: Path | None, key: dict[str, Any]) -> bool:
        if index_dir is None:
            return False
        meta_p, pos_p = index_dir / "corpus_index.json", index_dir / "corpus_positions.npy"
        if not (meta_p.is_file() and pos_p.is_file()):
            return False
        try:  # any problem with a saved index (stale, torn, corrupt) means: rebuild it
            meta = json.loads(meta_p.read_text(encoding="utf-8"))
            if meta.get("key") != key:
                return False
            positions = np.load(pos_p, allow_pickle=False)
            if (positions.ndim != 1 or positions.dtype != np.int64 or len(positions) != meta["documents"]
                    or hashlib.sha1(positions.tobytes()).hexdigest() != meta["positions_sha1"]):
                return False
            skipped = Counter({str(k): int(v) for k, v in meta["skipped"].items()})
            notes = Counter({str(k): int(v) for k, v in meta["notes"].items()})
        except Exception:
            return False
        self.positions, self.skipped, self.notes = positions, skipped, notes
        return True

    def _save_index(self, index_dir: Path, key: dict[str, Any]) -> None:
        from .io import atomic_save_npy, atomic_write_json

        try:  # positions first: the metadata, written last, holds their hash
            atomic_save_npy(index_dir / "corpus_positions.npy", self.positions)
            atomic_write_json(index_dir / "corpus_index.json",
                              {"key": key, "skipped": dict(self.skipped), "notes": dict(self.notes),
                               "documents": int(len(self.positions)),
                               "positions_sha1": hashlib.sha1(self.positions.tobytes()).hexdigest()})
        except OSError as e:  # a cache: not being able to keep it costs a rebuild next time, nothing more
            log.warning("could not save the corpus index in %s: %s", index_dir, _one_line(e))

    def _build_index(self, progress: bool) -> None:
        from .progress import bar

        seen: set[bytes] = set()
        positions = array("q")
        skipped: Counter[str] = Counter()
        notes: Counter[str] = Counter()
        n = 0
        try:
            with bar("indexing corpus", total=None, enabled=progress) as tick:
                for raw in self._source.scan():
                    n += 1
                    if n % 4096 == 0:
                        tick(4096)
                    doc_id, reason, doc_notes = self._check(raw)
                    if reason:
                        skipped[reason] += 1
                        continue
                    key = hashlib.blake2b(doc_id.encode("utf-8", "surrogatepass"), digest_size=16).digest()
                    if key in seen:
                        skipped["duplicate_id"] += 1
                        continue
                    seen.add(key)
                    positions.append(raw.pos)
                    for note in doc_notes:
                        notes[note] += 1
                tick(n % 4096)
        except OSError as e:
            raise CorpusError(f"cannot read corpus {self.path}: {_one_line(e.strerror or e)}") from None
        self.positions = np.frombuffer(positions, dtype=np.int64).copy() if len(positions) else np.zeros(0, np.int64)
        self.skipped, self.notes = skipped, notes

    # ------------------------------------------------------------ records
    def _check(self, raw: _Raw) -> tuple[str, str, tuple[str, ...]]:
        """(id, skip reason or "", repairs) for a raw record, without building the Document."""
        doc, reason, notes = self._to_document(raw, -1, meta=False)
        if doc is None:
            return "", reason, ()
        return doc.id, "", notes

    def _to_document(self, raw: _Raw, index: int, meta: bool = True) -> tuple[Document | None, str, tuple[str, ...]]:
        o = self.options
        rec = raw.record
        if not isinstance(rec, dict):
            return None, raw.problem or "not_an_object", ()
        notes: list[str] = [raw.note] if raw.note else []
        text = rec.get(o.text_field)
        if text is None:
            if self._fields_seen is None:
                self._fields_seen = [str(k) for k in rec]
            return None, "missing_text", ()
        if isinstance(text, (bytes, bytearray)):  # a binary Parquet / arrow column
            try:
                text = bytes(text).decode("utf-8")
            except UnicodeDecodeError:
                text = bytes(text).decode("utf-8", errors="replace")
                notes.append("invalid_utf8")
        if not isinstance(text, str):
            return None, "non_string_text", ()
        if not _has_min_chars(text, o.min_chars):
            return None, "empty_text", ()
        full = text
        if len(text) > o.max_chars:
            if o.too_long == "skip":
                return None, "too_long", ()
            text = text[: o.max_chars]
            if not _has_min_chars(text, o.min_chars):
                return None, "empty_text", ()
            notes.append("truncated")
        raw_id = rec.get(o.id_field)
        if raw_id is None or (isinstance(raw_id, str) and not raw_id.strip()) or (
                isinstance(raw_id, float) and math.isnan(raw_id)):
            doc_id = content_id(full)
            notes.append("generated_id")
        elif isinstance(raw_id, bool):
            return None, "bad_id", ()
        elif isinstance(raw_id, str):
            doc_id = raw_id
        elif isinstance(raw_id, int):
            doc_id = str(raw_id)
        elif isinstance(raw_id, float) and raw_id.is_integer():  # an integer column with nulls, as floats
            doc_id = str(int(raw_id))
        else:
            return None, "bad_id", ()
        fields = {k: v for k, v in rec.items() if k != o.text_field and k != o.id_field} if meta else {}
        return Document(index=index, id=doc_id, text=text, meta=fields), "", tuple(notes)

    # ------------------------------------------------------------ access
    def __len__(self) -> int:
        return int(len(self.positions))

    def get(self, indices: Iterable[int] | np.ndarray) -> list[Document]:
        """Documents by index, in the order asked (repeats allowed).

        Raises IndexError for an index outside ``0 .. len - 1`` and CorpusError
        when the source changed since it was indexed.
        """
        idx = [operator.index(i) for i in indices]
        n = len(self)
        for i in idx:
            if not 0 <= i < n:
                raise IndexError(f"document index {i} out of range (the corpus has {n} documents)")
        if not idx:
            return []
        try:
            raws = self._source.fetch(self.positions[idx].tolist())
        except OSError as e:
            raise CorpusError(f"cannot read corpus {self.path}: {_one_line(e.strerror or e)}") from None
        docs = []
        for i, raw in zip(idx, raws):
            doc, reason, _ = self._to_document(raw, i)
            if doc is None:
                raise CorpusError(f"corpus {self.path} changed since it was indexed (document {i}: {reason})")
            docs.append(doc)
        return docs

    def iter_batches(self, batch_size: int = 1024, start: int = 0, stop: int | None = None) -> Iterator[list[Document]]:
        """Stream documents ``start..stop`` in order, ``batch_size`` at a time."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        start = max(0, start)
        stop = len(self) if stop is None else min(stop, len(self))
        for s in range(start, stop, batch_size):
            yield self.get(range(s, min(stop, s + batch_size)))

    def skip_counts(self) -> dict[str, int]:
        return dict(self.skipped)
