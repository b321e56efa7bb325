"""How cards, reports and results name the files a run read: the file name and its content hash, never the
machine's absolute path (``corpus.jsonl (sha256 3f2a…)``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

HASH_LIMIT = 2 << 30  # files above 2 GiB are named by equal's sampled fingerprint of the corpus instead


def _locate(raw: str, run_dir: Path | None) -> Path | None:
    p = Path(raw)
    candidates = [p] if p.is_absolute() else [p, *([run_dir.parent / p, run_dir / p] if run_dir else [])]
    return next((c for c in candidates if c.is_file()), None)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_label(raw: Any, run_dir: Path | None = None, digits: int = 12) -> str:
    """``name (sha256 <first digits>)`` for a file a run read; ``name`` alone where the file is not found here.
    A corpus above ``HASH_LIMIT`` is named by the sampled SHA-1 that equal's corpus index keeps."""
    raw = str(raw or "")
    if not raw:
        return "n/a"
    name = Path(raw).name
    path = _locate(raw, run_dir)
    if path is None:
        return name
    if path.stat().st_size > HASH_LIMIT and run_dir is not None:
        try:
            src = json.loads((run_dir / "state" / "corpus_index.json").read_text())["key"]["source"]
            return f"{name} ({src['size']} bytes, sampled sha1 {src['sample_sha1'][:digits]})"
        except (OSError, KeyError, ValueError):
            pass
    return f"{name} (sha256 {sha256_of(path)[:digits]})"
