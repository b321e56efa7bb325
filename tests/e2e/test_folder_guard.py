"""User errors found before a run folder is made leave no folder behind; a budget larger than the corpus is
said in one line, not clamped silently."""

from __future__ import annotations

import json

import pytest

from conftest import REF_MATH, equal_cli, write_slice

pytestmark = pytest.mark.needs_data


@pytest.mark.parametrize("case", ["missing_corpus", "missing_reference", "bad_reference", "empty_corpus"])
def test_a_user_error_leaves_no_empty_run_folder(case, tmp_path):
    corpus = write_slice(tmp_path / "c.jsonl", 20)
    ref = REF_MATH
    if case == "missing_corpus":
        corpus = tmp_path / "nope.jsonl"
    elif case == "missing_reference":
        ref = tmp_path / "nope-ref.jsonl"
    elif case == "bad_reference":
        ref = tmp_path / "bad-ref.jsonl"
        ref.write_text('{"text": "no question or answer here"}\n')
    elif case == "empty_corpus":
        corpus = tmp_path / "empty.jsonl"
        corpus.write_text('{"id": "a", "text": ""}\n')
    out = tmp_path / "runs" / "x"
    r = equal_cli("run", "--corpus", corpus, "--reference", ref, "--out", out, "-q", timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))


def test_an_existing_folder_is_never_removed_on_a_user_error(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    r = equal_cli("run", "--corpus", tmp_path / "nope.jsonl", "--reference", REF_MATH, "--out", out, "-q")
    assert r.returncode == 2
    assert (out / "notes.txt").read_text() == "keep me"


def test_a_budget_larger_than_the_corpus_is_said(tmp_path):
    corpus = write_slice(tmp_path / "c.jsonl", 40)
    out = tmp_path / "run"
    r = equal_cli("run", "--corpus", corpus, "--reference", REF_MATH, "--out", out, "--budget", "500",
                  "--policy", "random", "--set", "score.prior_sample=50", "--set", "embed.max_seq_length=64", "-q")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "budget 500 is larger than the corpus (40 usable documents)" in r.stderr
    assert json.loads((out / "summary.json").read_text())["docs_extracted"] == 40
