"""A small on-disk cache of LLM extractions: SQLite in WAL mode.

One table, ``extractions(key TEXT PRIMARY KEY, value TEXT, created REAL)``;
``value`` is a JSON object (the raw response content, the token usage and the
parsed pairs). Keys are sha256 digests of everything that determines a
response (see :func:`cache_key`), so a hit can stand in for a request.

WAL mode lets several processes read while one writes; writers wait for each
other up to ``timeout`` seconds. Every ``put`` is its own committed
transaction, so whatever was stored before a crash survives it. WAL needs a
local file system (not NFS).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

CACHE_FILE = "extractions.sqlite"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/equal``, else ``~/.cache/equal``."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "equal"


def cache_path(cache_dir: str | os.PathLike | None) -> Path:
    """The SQLite file inside ``cache_dir`` (or the default folder)."""
    return Path(cache_dir if cache_dir else default_cache_dir()) / CACHE_FILE


def cache_key(**parts: Any) -> str:
    """sha256 of the canonical JSON of ``parts`` (sorted keys, exact text)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ExtractionCache:
    """``get(key) -> dict | None`` and ``put(key, value)``; safe across threads and processes."""

    def __init__(self, path: str | os.PathLike, timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = sqlite3.connect(
            str(self.path), timeout=timeout, isolation_level=None, check_same_thread=False)
        self._db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS extractions (key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL NOT NULL)")

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"cache {self.path} is closed")
        return self._db

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn().execute("SELECT value FROM extractions WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            value = json.loads(row[0])
        except ValueError:  # a damaged row is a miss, and is overwritten by the next put
            return None
        return value if isinstance(value, dict) else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        blob = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            self._conn().execute("INSERT OR REPLACE INTO extractions (key, value, created) VALUES (?, ?, ?)",
                                 (key, blob, time.time()))

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return self._conn().execute("SELECT 1 FROM extractions WHERE key = ?", (key,)).fetchone() is not None

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn().execute("SELECT COUNT(*) FROM extractions").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> "ExtractionCache":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ExtractionCache({str(self.path)!r})"
