"""The run folder's layout, its writer lock, and the check of its files against what was recorded.

Every command that writes into a run folder (``run``, ``extract-all`` into its table, ``export`` into its drop
report, ``report``) holds :class:`FolderLock` for its whole life: ``fcntl.flock`` on ``.equal.lock``, so the lock
dies with its process (a ``kill -9`` never leaves a stale one) and a second writer is refused at once, naming
the pid that holds it. Readers (``inspect``, ``export``, ``train``) call :func:`check_files` before they trust
the journals: a finished run whose files disagree with its ``summary.json`` is an error, never a smaller export.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from .errors import FolderInUse, JournalMismatch

log = logging.getLogger("equal")

LOCK_FILE = ".equal.lock"
#: The journals whose size a finished run records in ``summary.json`` (``files``), by file name.
RECORDED = ("dataset.jsonl", "rounds.jsonl", "extracted.jsonl")
_warned_no_flock = False


class FolderLock:
    """An exclusive, non-blocking lock on a folder for one writer: ``with FolderLock(path): ...``."""

    def __init__(self, folder: str | Path, what: str = "run folder") -> None:
        self.folder = Path(folder)
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> "FolderLock":
        global _warned_no_flock
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            fcntl = None
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                raise FolderInUse(f"the {self.what} {self.folder} is in use by another equal process"
                                  f"{f' (pid {holder})' if holder else ''}; wait for it to finish or use another "
                                  f"folder") from None
            except OSError as e:  # a file system without flock (some network mounts)
                if not _warned_no_flock:
                    log.warning("cannot lock %s (%s); going on without the one-writer guard", path,
                                e.strerror or e)
                    _warned_no_flock = True
        mine = f"{os.getpid()}\n".encode()
        if os.pread(fd, 64, 0) != mine:  # unchanged where this process held it before (a finished run is left alone)
            os.ftruncate(fd, 0)
            os.pwrite(fd, mine, 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        raw = os.pread(fd, 32, 0).decode().strip()
        return int(raw) if raw else None
    except (OSError, ValueError):
        return None


def file_record(path: Path) -> dict[str, Any]:
    """What a finished run records of one of its journals: bytes, complete lines and a SHA-256 digest."""
    h = hashlib.sha256()
    lines = 0
    size = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            lines += block.count(b"\n")
            size += len(block)
    return {"bytes": size, "lines": lines, "sha256": h.hexdigest()}


def check_files(run_dir: str | Path, summary: dict[str, Any] | None = None) -> None:
    """Check a finished run's journals against its summary (``files``: bytes, lines and digest; older runs:
    the pair count of ``dataset.jsonl``). Raises :class:`~equal.errors.JournalMismatch` naming the file."""
    import json

    run_dir = Path(run_dir)
    if summary is None:
        p = run_dir / "summary.json"
        if not p.exists():
            return
        try:
            summary = json.loads(p.read_text(encoding="utf-8"))
        except ValueError:
            raise JournalMismatch(f"{p} is not valid JSON; rerun `equal run` with --restart") from None
    recorded = summary.get("files") or {}
    if not recorded and "pairs" in summary:  # a run finished before files were recorded
        recorded = {"dataset.jsonl": {"lines": int(summary["pairs"])}}
    for name, want in recorded.items():
        path = run_dir / name
        if not path.exists():
            raise JournalMismatch(f"{path} is missing, but the run's summary.json records it; the run folder is "
                                  f"damaged (rerun `equal run` with --restart)")
        have = file_record(path) if "sha256" in want else {"lines": _lines(path)}
        for key in ("bytes", "lines", "sha256"):
            if key in want and have.get(key) != want[key]:
                what = {"bytes": f"{have['bytes']} bytes, not {want['bytes']}",
                        "lines": f"{have['lines']} complete lines, not {want['lines']}",
                        "sha256": "content that differs from what was recorded"}[key]
                raise JournalMismatch(f"{path} has {what} as summary.json records; the run folder is damaged "
                                      f"(rerun `equal run` with --restart)")


def _lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))
