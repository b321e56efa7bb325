"""Prompt templates and token counting for the ``openai`` extractor.

A template is read from a file or the shipped ``prompts/`` folder; ``{document}``, ``{max_pairs}`` and
``{pairs}`` are replaced in one pass. :class:`Tokens` counts and cuts text with ``llm.tokenizer`` when
one is configured, else as characters / 4.
"""

from __future__ import annotations

import hashlib
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

from ...config import ConfigError

#: Characters per token when no tokenizer is configured.
CHARS_PER_TOKEN = 4

_PLACEHOLDER = re.compile(r"\{(document|max_pairs|pairs)\}")


def read_prompt(path: str | os.PathLike | None, shipped: str) -> str:
    """The template at ``path``, else the shipped ``prompts/<shipped>``."""
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise ConfigError(f"prompt file not found: {p}")
        return p.read_text(encoding="utf-8")
    return resources.files("equal.extract").joinpath("prompts", shipped).read_text(encoding="utf-8")


def render(template: str, **values: str) -> str:
    """Replace ``{document}``, ``{max_pairs}`` and ``{pairs}`` in one pass (other braces stay)."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Tokens:
    """Token counting and cutting with the tokenizer named ``name`` (loaded on first use), or characters / 4."""

    def __init__(self, name: str | None) -> None:
        self.name = name
        self._tokenizer: Any = None
        self._loaded = False

    def load(self) -> Any:
        """The tokenizer, or None when none is configured; a ConfigError when it cannot be loaded."""
        if not self._loaded:
            self._loaded = True
            if self.name:
                try:
                    from transformers import AutoTokenizer

                    self._tokenizer = AutoTokenizer.from_pretrained(self.name)
                except Exception as e:  # noqa: BLE001
                    raise ConfigError(f"cannot load tokenizer {self.name!r}: {type(e).__name__}: {e}") from None
        return self._tokenizer

    def count(self, text: str) -> int:
        tok = self.load()
        if tok is None:
            return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN
        return len(tok(text, add_special_tokens=False)["input_ids"])

    def truncate(self, text: str, limit: int) -> tuple[str, bool]:
        """``text`` cut to ``limit`` tokens, and whether it was cut."""
        tok = self.load()
        if tok is None:
            max_chars = limit * CHARS_PER_TOKEN
            if len(text) <= max_chars:
                return text, False
            head = text[:max_chars]
            i = max(head.rfind(" "), head.rfind("\n"))
            return (head[:i] if i > max_chars * 0.9 else head).rstrip(), True
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=bool(getattr(tok, "is_fast", False)))
        ids = enc["input_ids"]
        if len(ids) <= limit:
            return text, False
        offsets = enc.get("offset_mapping")
        if offsets:
            return text[: offsets[limit - 1][1]].rstrip(), True
        return tok.decode(ids[:limit]).rstrip(), True
