"""Crash-safe file writing.

Every file in a run folder is written either atomically (temporary file,
fsync, rename) or as an append-only journal whose committed length is kept in
a checkpoint, so a reader never sees a half-written record and a resumed run
cuts away whatever was appended after the last checkpoint.
"""

from __future__ import annotations

from .errors import UserError

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator


_UMASK = os.umask(0)
os.umask(_UMASK)


class OutputError(UserError, OSError):
    """The run folder cannot be written (permissions, full disk)."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file ordinary permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_save_npy(path: str | Path, array: Any) -> None:
    """``np.save`` written atomically."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())


def atomic_save_npz(path: str | Path, **arrays: Any) -> None:
    """``np.savez`` written atomically."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def read_json(path: str | Path, default: Any = None) -> Any:
    p = Path(path)
    if not p.exists():
        return default
    return json.loads(p.read_text(encoding="utf-8"))


def dumps_line(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, ensure_ascii=False, sort_keys=False) + "\n").encode("utf-8")


class Journal:
    """An append-only file whose committed length is tracked by the caller.

    ``append`` writes and fsyncs; ``size`` is what a checkpoint records;
    ``truncate(size)`` on resume drops what was written after that checkpoint.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            self.path.touch()

    def size(self) -> int:
        return self.path.stat().st_size

    def truncate(self, size: int) -> int:
        """Cut the file back to ``size`` bytes; returns how many bytes were dropped."""
        cur = self.size()
        if cur > size:
            with open(self.path, "r+b") as f:
                f.truncate(size)
                f.flush()
                os.fsync(f.fileno())
        return max(0, cur - size)

    def append_bytes(self, data: bytes) -> None:
        if not data:
            return
        with open(self.path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        self.append_bytes(b"".join(dumps_line(r) for r in records))


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Read complete JSON lines; a torn last line (no newline) is ignored."""
    p = Path(path)
    if not p.exists():
        return
    with open(p, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break
            line = line.strip()
            if line:
                yield json.loads(line)
