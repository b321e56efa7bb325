"""The reference set: question-answer pairs of the target task.

:func:`load_reference` reads a JSONL file, one object per line, in any of
these shapes (checked in this order):

* ``{"question": ..., "answer": ...}``
* ``{"prompt": ..., "output": ...}``
* ``{"instruction": ..., "input": ..., "output": ...}``; ``input`` is optional
  and, when not blank, joined to the instruction after a blank line.

A ``.json`` file holding one JSON array of such objects is read too.

It returns a :class:`Reference`: ``pairs`` (a list of :class:`QAPair`, in file
order, text stripped of surrounding whitespace) and ``skipped``, a Counter of
the lines left out by reason:

``blank_line``, ``malformed_json`` (not JSON), ``not_an_object``,
``unknown_fields`` (none of the shapes above), ``missing_question`` (question
absent, blank or not a string), ``missing_answer`` (answer absent, blank or
not a string or number).

Invalid UTF-8 bytes and lone surrogate escapes are replaced by U+FFFD and
counted in ``notes["invalid_utf8"]``.

A missing or unreadable file, a file with no records and a file with no usable
pair raise :class:`ReferenceError` with a one-line message.
"""

from __future__ import annotations

from .errors import UserError

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .corpus import _replace_surrogates
from .types import QAPair

# (question key, answer key) in the order they are tried
_SHAPES = (("question", "answer"), ("prompt", "output"), ("instruction", "output"))


class ReferenceError(UserError, ValueError):  # noqa: A001 - shadows the builtin only inside this module
    """The reference set cannot be used (a user error, reported in one line)."""


@dataclass
class Reference:
    """The pairs read from a reference file and the lines left out, by reason."""

    pairs: list[QAPair]
    skipped: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[QAPair]:
        return iter(self.pairs)


def _as_text(value: Any) -> str | None:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    if isinstance(value, (int, float)) and not isinstance(value, bool):  # e.g. a numeric answer
        return str(value)
    return None


def _to_pair(rec: Any) -> tuple[QAPair | None, str]:
    if not isinstance(rec, dict):
        return None, "not_an_object"
    for q_key, a_key in _SHAPES:
        if q_key in rec:
            break
    else:
        return None, "unknown_fields"
    q = rec.get(q_key)
    question = q.strip() if isinstance(q, str) else ""
    if q_key == "instruction":
        extra = rec.get("input")
        if isinstance(extra, str) and extra.strip():
            question = f"{question}\n\n{extra.strip()}" if question else extra.strip()
    if not question:
        return None, "missing_question"
    answer = _as_text(rec.get(a_key))
    if answer is None:
        return None, "missing_answer"
    return QAPair(question=question, answer=answer), ""


def _records(path: Path, notes: Counter) -> Iterator[tuple[Any, str]]:
    """(record, "") per line, or (None, reason) for a line that is not JSON."""
    with open(path, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        f.seek(0)
        if path.suffix.lower() == ".json" and head.startswith(b"["):
            try:
                data = json.loads(f.read().decode("utf-8", errors="replace").lstrip("\ufeff"))
            except (ValueError, RecursionError):
                data = None
            if isinstance(data, list):
                for rec in data:
                    yield rec, ""
                return
            f.seek(0)
        for line in f:
            try:
                s = line.decode("utf-8")
            except UnicodeDecodeError:
                s = line.decode("utf-8", errors="replace")
                notes["invalid_utf8"] += 1
            s = s.strip().lstrip("\ufeff")
            if not s:
                yield None, "blank_line"
                continue
            try:
                rec = json.loads(s)
            except (ValueError, RecursionError):
                yield None, "malformed_json"
                continue
            if b"\\ud" in line or b"\\uD" in line:
                rec, changed = _replace_surrogates(rec)
                if changed:
                    notes["invalid_utf8"] += 1
            yield rec, ""


def load_reference(path: str | Path) -> Reference:
    """Read a reference set; see the module docstring for the accepted shapes and skip reasons."""
    p = Path(path)
    if not p.exists():
        raise ReferenceError(f"reference file not found: {p}")
    if p.is_dir():
        raise ReferenceError(f"reference {p} is a folder, not a JSONL file")
    pairs: list[QAPair] = []
    skipped: Counter[str] = Counter()
    notes: Counter[str] = Counter()
    try:
        for rec, reason in _records(p, notes):
            if not reason:
                pair, reason = _to_pair(rec)
                if pair is not None:
                    pairs.append(pair)
                    continue
            skipped[reason] += 1
    except OSError as e:
        raise ReferenceError(f"cannot read reference {p}: {' '.join(str(e.strerror or e).split())}") from None
    if not pairs:
        if sum(v for k, v in skipped.items() if k != "blank_line") == 0:
            raise ReferenceError(f"reference {p} is empty")
        counts = ", ".join(f"{k}={v}" for k, v in skipped.most_common())
        raise ReferenceError(f"reference {p} has no usable questions (skipped: {counts}); expected JSONL records "
                             f"with question/answer, prompt/output or instruction/output")
    return Reference(pairs=pairs, skipped=skipped, notes=notes)
