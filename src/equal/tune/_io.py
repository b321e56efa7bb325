"""JSONL reading for user-given files (benchmarks, messages): every line counts, a bad one is an error."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator


def read_records(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSONL file, the last line included even without a newline."""
    p = Path(path)
    with open(p, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{p} line {n}: not JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise ValueError(f"{p} line {n}: expected a JSON object")
            yield rec
