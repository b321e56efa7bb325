"""Reference loader: accepted shapes, skipped lines by reason, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REF_CODE, REF_MATH, require_data
from equal.reference import Reference, ReferenceError, load_reference
from equal.types import QAPair

REAL = {"reference_math.jsonl": REF_MATH, "reference_code.jsonl": REF_CODE}


def real(name: str) -> Path:
    """A reference file of the shared data (the test is skipped without it, an error when CI is set)."""
    p = REAL[name]
    require_data(p)
    return p


def line(rec) -> bytes:
    return (json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8")


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg
    assert isinstance(e.value, ValueError)
    return msg


@pytest.mark.parametrize("name, n, first", [
    ("reference_math.jsonl", 7473, "Natalia sold clips to 48 of her friends"),
    ("reference_code.jsonl", 374, "Write a function to find the longest chain"),
])
def test_real_reference_sets(name, n, first):
    ref = load_reference(real(name))
    assert isinstance(ref, Reference)
    assert len(ref) == len(ref.pairs) == n
    assert not ref.skipped and not ref.notes
    assert ref.pairs[0].question.startswith(first)
    assert all(isinstance(p, QAPair) and p.question and p.answer for p in ref)


def test_real_math_slice_with_bad_lines(tmp_path):
    good = real("reference_math.jsonl").read_bytes().splitlines(keepends=True)[:50]
    bad = [b"{torn\n", b"\n", b"[1, 2]\n", line({"title": "x"}), line({"question": "  ", "answer": "a"}),
           line({"question": "q?", "answer": None}), line({"question": "q?"}), line({"question": 3, "answer": "a"})]
    lines = []
    for i, g in enumerate(good):
        lines.append(g)
        if i % 6 == 0 and bad:
            lines.append(bad.pop())
    (tmp_path / "r.jsonl").write_bytes(b"".join(lines))
    ref = load_reference(tmp_path / "r.jsonl")
    expected = [json.loads(g) for g in good]
    assert [(p.question, p.answer) for p in ref.pairs] == [(e["question"].strip(), e["answer"].strip()) for e in expected]
    assert dict(ref.skipped) == {"malformed_json": 1, "blank_line": 1, "not_an_object": 1, "unknown_fields": 1,
                                 "missing_question": 2, "missing_answer": 2}


def test_accepted_shapes(tmp_path):
    recs = [
        {"question": " What is 2+2? ", "answer": "4\n"},
        {"prompt": "Say hi", "output": "hi"},
        {"instruction": "Translate to French", "input": "cat", "output": "chat"},
        {"instruction": "Name a colour", "input": "  ", "output": "red"},
        {"instruction": "No input key", "output": "ok"},
        {"instruction": "", "input": "only the input", "output": "fine"},
        {"question": "How many?", "answer": 72},
        {"question": "Extra fields are ignored", "answer": "yes", "id": 9, "source": "x"},
    ]
    p = tmp_path / "r.jsonl"
    p.write_bytes(b"".join(line(r) for r in recs))
    ref = load_reference(p)
    assert [(x.question, x.answer) for x in ref.pairs] == [
        ("What is 2+2?", "4"),
        ("Say hi", "hi"),
        ("Translate to French\n\ncat", "chat"),
        ("Name a colour", "red"),
        ("No input key", "ok"),
        ("only the input", "fine"),
        ("How many?", "72"),
        ("Extra fields are ignored", "yes"),
    ]
    assert not ref.skipped


def test_json_array_file(tmp_path):
    p = tmp_path / "alpaca.json"
    p.write_text(json.dumps([{"instruction": "a", "input": "", "output": "b"}, {"nope": 1}, 5], indent=2))
    ref = load_reference(p)
    assert [(x.question, x.answer) for x in ref.pairs] == [("a", "b")]
    assert dict(ref.skipped) == {"unknown_fields": 1, "not_an_object": 1}


def test_invalid_unicode_is_replaced_and_counted(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_bytes(b'{"question": "caf\xe9?", "answer": "yes"}\n'
                  b'{"question": "lone \\ud800", "answer": "ok"}\n'
                  b'\xef\xbb\xbf{"question": "bom", "answer": "fine"}\n')
    ref = load_reference(p)
    assert [x.question for x in ref.pairs] == ["caf\ufffd?", "lone \ufffd", "bom"]
    assert dict(ref.notes) == {"invalid_utf8": 2}
    for x in ref.pairs:
        x.question.encode("utf-8")


def test_missing_file(tmp_path):
    with pytest.raises(ReferenceError) as e:
        load_reference(tmp_path / "none.jsonl")
    assert one_line(e) == f"reference file not found: {tmp_path / 'none.jsonl'}"


def test_folder(tmp_path):
    with pytest.raises(ReferenceError) as e:
        load_reference(tmp_path)
    assert "is a folder" in one_line(e)


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_empty_reference(tmp_path, content):
    p = tmp_path / "r.jsonl"
    p.write_bytes(content)
    with pytest.raises(ReferenceError) as e:
        load_reference(p)
    assert one_line(e) == f"reference {p} is empty"


def test_no_usable_questions(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_bytes(b"garbage\n" + line({"text": "a corpus line, not a QA pair"}) + line({"question": "", "answer": "x"}))
    with pytest.raises(ReferenceError) as e:
        load_reference(p)
    msg = one_line(e)
    assert "has no usable questions" in msg
    assert "malformed_json=1" in msg and "unknown_fields=1" in msg and "missing_question=1" in msg
    assert "question/answer" in msg


def test_reference_error_is_a_value_error():
    import builtins

    assert ReferenceError is not builtins.ReferenceError
    assert issubclass(ReferenceError, ValueError)
