"""One writer per run folder: a second `equal run` on the same folder is refused at once, the first finishes
with exactly a single run's outputs, and a `kill -9` leaves no stale lock."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import equal_cli, run_args
from equal.errors import FolderInUse
from equal.layout import LOCK_FILE, FolderLock

pytestmark = [pytest.mark.slow, pytest.mark.needs_data]


def _start(args, env=None):
    return subprocess.Popen([sys.executable, "-m", "equal.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
                            start_new_session=True)


def _wait_for_lock(out, proc, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        f = out / LOCK_FILE
        if f.exists() and f.read_text().strip() == str(proc.pid):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the first run never took the lock")


def test_two_runs_on_one_folder_one_refuses_the_other_matches_a_single_run(slice400, math_cli_run, tmp_path):
    single, _ = math_cli_run
    out = tmp_path / "run"
    first = _start(run_args(slice400, out))
    _wait_for_lock(out, first)
    second = equal_cli(*run_args(slice400, out), timeout=300)  # the same command, while the first runs
    assert second.returncode == 2, second.stderr[-2000:]
    assert "in use" in second.stderr and f"pid {first.pid}" in second.stderr
    assert "Traceback" not in second.stderr and len(second.stderr.strip().splitlines()) == 1
    _, err = first.communicate(timeout=900)
    assert first.returncode == 0, err[-3000:]
    for name in ("dataset.jsonl", "rounds.jsonl", "extracted.jsonl"):
        assert (out / name).read_bytes() == (single / name).read_bytes(), name


def test_a_killed_writer_leaves_no_stale_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from equal.layout import FolderLock; FolderLock(sys.argv[1]).acquire(); "
        "print('locked', flush=True); time.sleep(600)"), str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(FolderInUse, match=f"pid {holder.pid}"):
        FolderLock(tmp_path).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    lock = FolderLock(tmp_path).acquire()  # the kernel dropped the dead process's lock
    assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
    lock.release()


def test_a_killed_run_resumes_without_a_stale_lock(slice400, math_cli_run, tmp_path):
    single, _ = math_cli_run
    out = tmp_path / "run"
    r = equal_cli(*run_args(slice400, out), env={"EQUAL_TEST_KILL_AT": "round:2"})
    assert r.returncode == -signal.SIGKILL
    assert (out / LOCK_FILE).exists()  # the file stays; the lock died with the process
    r = equal_cli(*run_args(slice400, out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "dataset.jsonl").read_bytes() == (single / "dataset.jsonl").read_bytes()


def test_readers_need_no_lock(math_cli_run, tmp_path):
    single, _ = math_cli_run
    run = tmp_path / "copy"
    shutil.copytree(single, run)
    with FolderLock(run):  # a writer holds the folder: inspect and config still work
        r = equal_cli("inspect", run)
        assert r.returncode == 0, r.stderr[-2000:]
        r = equal_cli("report", run)
        assert r.returncode == 2 and "in use" in r.stderr  # report writes into the folder


def test_without_flock_it_says_so_once_and_goes_on(tmp_path, monkeypatch, caplog):
    import fcntl

    import equal.layout as layout

    def no_flock(fd, op):  # a file system without locks (some network mounts) answers ENOLCK
        raise OSError(37, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    monkeypatch.setattr(layout, "_warned_no_flock", False)
    with caplog.at_level("WARNING", logger="equal"):
        a = FolderLock(tmp_path / "a").acquire()
        b = FolderLock(tmp_path / "b").acquire()
    assert [r.getMessage() for r in caplog.records].count(caplog.records[0].getMessage()) == 1
    assert len(caplog.records) == 1 and "one-writer guard" in caplog.records[0].getMessage()
    a.release()
    b.release()
