"""Journals are checked before they are trusted: a run folder whose files disagree with its checkpoint or its
summary gives one line naming the file and exit 2 (never a traceback, never a smaller export); a torn tail that
a resume can cut back is still cut back."""

from __future__ import annotations

import json
import shutil
import signal

import pytest

from conftest import equal_cli, run_args

pytestmark = [pytest.mark.slow, pytest.mark.needs_data]


def _cut_mid_line(path, keep_lines):
    data = path.read_bytes()
    lines = data.splitlines(keepends=True)
    cut = sum(len(x) for x in lines[:keep_lines]) + len(lines[keep_lines]) // 2
    path.write_bytes(data[:cut])


def _one_line_error(r, name):
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr and name in r.stderr, r.stderr[-2000:]
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.fixture
def finished(math_cli_run, tmp_path):
    single, _ = math_cli_run
    run = tmp_path / "finished"
    shutil.copytree(single, run)
    return run


def test_a_finished_run_with_a_cut_dataset_is_refused_everywhere(slice400, finished, tmp_path):
    summary = json.loads((finished / "summary.json").read_text())
    assert summary["files"]["dataset.jsonl"]["lines"] == summary["pairs"] > 5
    _cut_mid_line(finished / "dataset.jsonl", 5)
    _one_line_error(equal_cli(*run_args(slice400, finished)), "dataset.jsonl")  # not "already finished"
    exp = tmp_path / "export"
    _one_line_error(equal_cli("export", finished, "--format", "messages", "--out", exp), "dataset.jsonl")
    assert not (exp / "train.jsonl").exists()  # never a smaller export
    _one_line_error(equal_cli("report", finished), "dataset.jsonl")
    _one_line_error(equal_cli("inspect", finished), "dataset.jsonl")


def test_a_finished_run_with_changed_content_is_refused(finished, tmp_path):
    p = finished / "rounds.jsonl"
    lines = p.read_text().splitlines(keepends=True)
    lines[0] = lines[0].replace('"round": 1', '"round": 7')  # same line count, other bytes
    p.write_text("".join(lines))
    _one_line_error(equal_cli("export", finished, "--format", "alpaca", "--out", tmp_path / "x"), "rounds.jsonl")


def test_an_intact_finished_run_passes_the_checks(finished, tmp_path):
    r = equal_cli("export", finished, "--format", "messages", "--out", tmp_path / "export")
    assert r.returncode == 0, r.stderr[-2000:]
    r = equal_cli("inspect", finished)
    assert r.returncode == 0, r.stderr[-2000:]


def test_an_unfinished_run_with_lost_committed_lines_is_refused(slice400, tmp_path):
    out = tmp_path / "run"
    r = equal_cli(*run_args(slice400, out), env={"EQUAL_TEST_KILL_AT": "round:3"})
    assert r.returncode == -signal.SIGKILL
    _cut_mid_line(out / "dataset.jsonl", 3)  # inside what the checkpoint committed
    _one_line_error(equal_cli(*run_args(slice400, out)), "dataset.jsonl")


def test_a_torn_tail_is_cut_back_on_resume(slice400, math_cli_run, tmp_path):
    single, _ = math_cli_run
    out = tmp_path / "run"
    r = equal_cli(*run_args(slice400, out), env={"EQUAL_TEST_KILL_AT": "round:3"})
    assert r.returncode == -signal.SIGKILL
    with open(out / "dataset.jsonl", "ab") as f:  # half a record after the last commit
        f.write(b'{"question": "torn')
    r = equal_cli(*run_args(slice400, out))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "dropped" in r.stderr and "dataset.jsonl" in r.stderr
    assert (out / "dataset.jsonl").read_bytes() == (single / "dataset.jsonl").read_bytes()
