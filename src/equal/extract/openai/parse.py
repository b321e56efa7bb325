"""Reading a model's answer: lenient JSON parsing and validation of the QA pairs.

:func:`parse_pairs` finds the pair candidates in a response's content (code fences, ``<think>`` blocks,
text around the JSON, an object wrapping the list, a list cut off by the token limit);
:func:`validate_pairs` keeps the well-formed ones and counts every rejection by reason.
:data:`PAIRS_SCHEMA` is the JSON schema sent as ``response_format``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ...config import ExtractConfig
from ..base import cut_text

PAIRS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "pairs": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
                "required": ["question", "answer"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["pairs"],
    "additionalProperties": False,
}

_FENCE = re.compile(r"```[ \t]*(?:json|JSON|javascript)?[ \t]*\n?(.*?)(?:```|$)", re.S)
_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.S | re.I)
_Q_KEYS = ("question", "q", "instruction", "prompt", "query")
_A_KEYS = ("answer", "a", "output", "response", "solution")
_LIST_KEYS = ("pairs", "qa_pairs", "qa", "questions", "items", "data", "results", "output")

_MISSING = object()


def _loads_lenient(text: str) -> Any:
    """The first JSON list or object in ``text`` (whole text first, then from each ``[``/``{``)."""
    text = text.strip()
    if not text:
        return _MISSING
    try:
        return json.loads(text)
    except ValueError:
        pass
    decoder = json.JSONDecoder()
    starts = [m.start() for m in re.finditer(r"[\[{]", text)][:64]
    for i in starts:
        try:
            value, _ = decoder.raw_decode(text, i)
        except ValueError:
            continue
        if isinstance(value, (list, dict)) and _unwrap(value) is not None:
            return value
    return _MISSING


def _has_key(d: dict, keys: tuple[str, ...]) -> bool:
    low = {str(k).lower() for k in d}
    return any(k in low for k in keys)


def _unwrap(value: Any, depth: int = 0) -> list[Any] | None:
    """The list of pair candidates inside a parsed JSON value."""
    if isinstance(value, list):
        return value
    if not isinstance(value, dict) or depth > 2:
        return None
    if _has_key(value, _Q_KEYS) and _has_key(value, _A_KEYS):
        return [value]
    lowered = {str(k).lower(): v for k, v in value.items()}
    for k in _LIST_KEYS:
        if isinstance(lowered.get(k), list):
            return lowered[k]
    for v in value.values():
        if isinstance(v, list):
            return v
    for v in value.values():
        if isinstance(v, dict):
            inner = _unwrap(v, depth + 1)
            if inner is not None:
                return inner
    return None


def _salvage(text: str) -> list[dict] | None:
    """Complete pair objects from a list that was cut off (e.g. by the token limit)."""
    if '"question"' not in text.lower():
        return None
    decoder = json.JSONDecoder()
    found: list[dict] = []
    i = text.find("{")
    while i != -1:
        try:
            obj, end = decoder.raw_decode(text, i)
        except ValueError:
            i = text.find("{", i + 1)
            continue
        if isinstance(obj, dict) and _has_key(obj, _Q_KEYS) and _has_key(obj, _A_KEYS):
            found.append(obj)
            i = text.find("{", end)
        else:
            i = text.find("{", i + 1)
    return found or None


def parse_pairs(content: str) -> list[Any] | None:
    """The pair candidates in a response's content, or ``None`` when it holds no usable JSON.

    ``[]`` (a valid, empty answer) is different from ``None`` (invalid JSON).
    """
    text = _THINK.sub("", content or "").strip()
    if not text:
        return None
    candidates = [m.group(1) for m in _FENCE.finditer(text) if m.group(1).strip()] + [text]
    for cand in candidates:
        value = _loads_lenient(cand)
        if value is _MISSING:
            continue
        items = _unwrap(value)
        if items is not None:
            try:
                json.loads(cand)
            except ValueError:  # found inside other text: maybe one object of a list that was cut off
                salvaged = _salvage(cand) or []
                if len(salvaged) > len(items):
                    return salvaged
            return items
    return _salvage(text)


def _field(item: dict, keys: tuple[str, ...]) -> Any:
    lowered = {str(k).lower(): v for k, v in item.items()}
    for k in keys:
        if k in lowered:
            return lowered[k]
    return None


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


@dataclass
class Validated:
    pairs: list[tuple[str, str]]
    rejections: Counter = field(default_factory=Counter)
    answers_truncated: int = 0


def validate_pairs(items: list[Any], document: str, cfg: ExtractConfig) -> Validated:
    """Keep well-formed, non-duplicate pairs within the length bounds, at most ``max_pairs_per_doc``."""
    out = Validated(pairs=[])
    ndoc = _norm(document)
    seen: set[str] = set()
    for item in items:
        if not isinstance(item, dict):
            out.rejections["not_an_object"] += 1
            continue
        q, a = _field(item, _Q_KEYS), _field(item, _A_KEYS)
        if q is None or a is None:
            out.rejections["missing_field"] += 1
            continue
        if isinstance(a, (int, float)) and not isinstance(a, bool):
            a = str(a)
        if not isinstance(q, str) or not isinstance(a, str):
            out.rejections["not_a_string"] += 1
            continue
        q, a = q.strip(), a.strip()
        if not q:
            out.rejections["empty_question"] += 1
            continue
        if not a:
            out.rejections["empty_answer"] += 1
            continue
        if len(q) < cfg.min_question_chars:
            out.rejections["question_too_short"] += 1
            continue
        if len(a) < cfg.min_answer_chars:
            out.rejections["answer_too_short"] += 1
            continue
        nq = _norm(q)
        if ndoc and (ndoc in nq or (len(nq) >= 0.8 * len(ndoc) and nq in ndoc)):
            out.rejections["question_is_document"] += 1
            continue
        if nq in seen:
            out.rejections["duplicate"] += 1
            continue
        if len(out.pairs) >= cfg.max_pairs_per_doc:
            out.rejections["over_max_pairs"] += 1
            continue
        if len(a) > cfg.max_answer_chars:
            a = cut_text(a, cfg.max_answer_chars)
            out.answers_truncated += 1
        seen.add(nq)
        out.pairs.append((q, a))
    return out
