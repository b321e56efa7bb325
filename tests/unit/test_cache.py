"""The SQLite extraction cache: round trips, its location, and concurrent writers in several processes."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
from pathlib import Path

from equal.extract.cache import CACHE_FILE, ExtractionCache, cache_key, cache_path, default_cache_dir


def test_round_trip_and_miss(tmp_path):
    with ExtractionCache(tmp_path / "c" / CACHE_FILE) as c:
        assert c.get("nope") is None and len(c) == 0
        value = {"content": '{"pairs": []}', "usage": {"prompt_tokens": 3, "completion_tokens": 1},
                 "pairs": [{"question": "Qué pasó en 1227?", "answer": "Murió."}]}
        c.put("k", value)
        assert c.get("k") == value and "k" in c and len(c) == 1
        c.put("k", {"content": "other"})
        assert c.get("k") == {"content": "other"} and len(c) == 1
    with ExtractionCache(tmp_path / "c" / CACHE_FILE) as c:  # persisted
        assert c.get("k") == {"content": "other"}


def test_wal_mode(tmp_path):
    p = tmp_path / CACHE_FILE
    ExtractionCache(p).close()
    with sqlite3.connect(p) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_location(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "equal"
    assert cache_path(None) == tmp_path / "xdg" / "equal" / CACHE_FILE
    assert cache_path(tmp_path / "mine") == tmp_path / "mine" / CACHE_FILE
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "equal"


def test_key_is_canonical():
    a = cache_key(model="m", document="d", temperature=0.0)
    assert a == cache_key(temperature=0.0, document="d", model="m")
    assert len(a) == 64
    assert a != cache_key(model="m", document="d ", temperature=0.0)
    assert a != cache_key(model="m2", document="d", temperature=0.0)


def _writer(path: str, worker: int, n: int) -> None:
    c = ExtractionCache(path)
    for i in range(n):
        c.put(f"{worker}-{i}", {"worker": worker, "i": i, "content": "x" * 500})
        c.get(f"{(worker + 1) % 4}-{i}")
    c.close()


def test_concurrent_processes(tmp_path):
    path = str(tmp_path / CACHE_FILE)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 100)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(600)  # a bound for a hung writer only: each finishes in seconds
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    with ExtractionCache(path) as c:
        assert len(c) == 400
        assert all(c.get(f"{w}-{i}") == {"worker": w, "i": i, "content": "x" * 500}
                   for w in range(4) for i in range(100))
    assert Path(path).exists()
