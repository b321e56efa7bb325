"""An extractor that reads pairs made elsewhere: by a bigger LLM, another tool, or an earlier run.

``--extractor file --set extract.file.path=PAIRS.jsonl`` (or ``.jsonl.zst`` / ``.jsonl.gz``). Each line of the
file is one document's pairs::

    {"doc_id": "...", "pairs": [{"question": "...", "answer": "..."}, ...]}

Other keys on a line are ignored, and so are other keys of a pair, except ``extractor`` and ``rule``: where a
pair carries them (the pairs file of an earlier run or of ``equal extract-all`` does) they are kept as its
provenance, so that the pairs keep saying who made them; a pair without them says ``extractor: file``.

* A document with no line is ``failed`` with reason ``not_in_file``; an empty ``pairs`` list is ``empty``.
* A line whose ``doc_id`` can be read but whose ``pairs`` cannot (not a list, a pair without string
  ``question`` and ``answer``) makes that document ``failed`` with reason ``bad_line``. A line without a
  readable ``doc_id`` (not JSON, not an object, no string ``doc_id``) is skipped and counted in ``stats()``
  (``skipped_lines``, by reason). Two lines for one ``doc_id`` are an error (which one would count?).
* At most ``extract.max_pairs_per_doc`` pairs are kept per document, in the file's order.
* The fingerprint is the sha256 of the file's decompressed content, so a changed file never reuses an
  extraction table or resumes a run made from the old one, and a recompressed one does.

The file is read once, when the extractor is made (Ray workers each make theirs from the config), and kept as
one raw line per document; a document's line is parsed when it is extracted.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

from ..errors import UserError
from ..types import Document, Extraction, QAPair

NAME = "file"


class PairsFileError(UserError, ValueError):
    """The pairs file is missing, unreadable or names a document twice."""


def _raw_lines(path: Path) -> Iterator[bytes]:
    from ..corpus_io import StreamDamage, iter_lines

    suffix = path.suffix.lower()
    kind = {".zst": "zst", ".zstd": "zst", ".gz": "gz"}.get(suffix)
    try:
        if kind is None:
            with open(path, "rb") as f:
                yield from f
        else:
            yield from iter_lines(path, kind)
    except StreamDamage as e:
        raise PairsFileError(f"pairs file {path} is damaged ({e.kind}: {e.detail})") from None
    except OSError as e:
        raise PairsFileError(f"cannot read pairs file {path}: {e.strerror or e}") from None


def _pairs(value: Any, limit: int) -> list[tuple[str, str, str, str]] | None:
    """``(question, answer, extractor, rule)`` of each pair of a line's ``pairs`` value; None if malformed."""
    if not isinstance(value, list):
        return None
    out = []
    for p in value:
        if not isinstance(p, dict):
            return None
        q, a = p.get("question"), p.get("answer")
        if not isinstance(q, str) or not isinstance(a, str):
            return None
        ex, rule = p.get("extractor"), p.get("rule")
        out.append((q, a, ex if isinstance(ex, str) and ex else NAME, rule if isinstance(rule, str) else ""))
    return out[:limit]


class FileExtractor:
    """Pairs looked up by document id in a JSONL pairs file (see the module's docstring)."""

    name = NAME

    def __init__(self, path: str | Path, max_pairs_per_doc: int = 8) -> None:
        if not path:
            raise PairsFileError("the file extractor needs a pairs file: --set extract.file.path=PAIRS.jsonl")
        self.path = Path(path).expanduser().resolve()
        if not self.path.is_file():
            raise PairsFileError(f"pairs file not found: {path}")
        self.max_pairs_per_doc = int(max_pairs_per_doc)
        self._lines: dict[str, bytes] = {}
        self.skipped: Counter[str] = Counter()
        digest = hashlib.sha256()
        for n, raw in enumerate(_raw_lines(self.path), 1):
            digest.update(raw)
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except ValueError:
                self.skipped["malformed_json"] += 1
                continue
            doc_id = rec.get("doc_id") if isinstance(rec, dict) else None
            if not isinstance(doc_id, str):
                self.skipped["no_doc_id" if isinstance(rec, dict) else "not_an_object"] += 1
                continue
            if doc_id in self._lines:
                raise PairsFileError(f"pairs file {path}: line {n} names doc_id {doc_id!r} again; give each "
                                     f"document one line")
            self._lines[doc_id] = raw
        self.sha256 = digest.hexdigest()
        self.counts: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._lines)

    def _one(self, doc: Document) -> Extraction:
        raw = self._lines.get(doc.id)
        if raw is None:
            return Extraction(pairs=[], status="failed", reason="not_in_file")
        got = _pairs(json.loads(raw).get("pairs"), self.max_pairs_per_doc)
        if got is None:
            return Extraction(pairs=[], status="failed", reason="bad_line")
        if not got:
            return Extraction(pairs=[], status="empty")
        return Extraction(pairs=[QAPair(q, a, doc_id=doc.id, extractor=ex, rule=rule) for q, a, ex, rule in got])

    def extract(self, docs: list[Document]) -> list[Extraction]:
        out = [self._one(d) for d in docs]
        for e in out:
            self.counts[e.reason or e.status] += 1
        return out

    def fingerprint(self) -> dict[str, Any]:
        return {"name": NAME, "sha256": self.sha256, "max_pairs_per_doc": self.max_pairs_per_doc}

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"docs_in_file": len(self._lines), **{k: int(v) for k, v in sorted(self.counts.items())}}
        if self.skipped:
            out["skipped_lines"] = dict(sorted(self.skipped.items()))
        return out

    def close(self) -> None:
        pass


def write_pairs_file(path: str | Path, records: Iterator[tuple[str, str, list[dict[str, str]]]]) -> int:
    """Write ``(doc_id, status, pairs)`` records as a pairs file the file extractor reads back (atomically; a
    ``.zst`` name is zstd-compressed). A failed document gets no line (it reads back as failed); an empty one an
    empty list. Returns the number of lines."""
    import os

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "wb") as raw:
        f: Any = raw
        if path.suffix.lower() in (".zst", ".zstd"):
            import zstandard

            f = zstandard.ZstdCompressor().stream_writer(raw, closefd=False)
        for doc_id, status, pairs in records:
            if status == "failed":
                continue
            f.write((json.dumps({"doc_id": doc_id, "pairs": pairs}, ensure_ascii=False) + "\n").encode("utf-8"))
            n += 1
        if f is not raw:
            f.close()
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(tmp, path)
    return n
