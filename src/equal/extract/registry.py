"""The extractors a run can name (``extract.name``), registered in one place.

An extractor is any object with the :class:`~equal.extract.base.Extractor` protocol (``extract(docs)``,
``fingerprint()``, ``stats()``, ``close()``, ``name``). Register a factory that builds it from the ``extract``
config section::

    from equal.extract.registry import register_extractor

    @register_extractor("my-extractor")
    def make(cfg):            # cfg: equal.config.ExtractConfig
        return MyExtractor(cfg.max_pairs_per_doc)

Then ``equal run --extractor my-extractor`` (or ``--set extract.name=my-extractor``) uses it for live runs,
``equal extract-all`` tables and Ray workers (which import the module that registers it, so register it at
import time of a module they can import).
"""

from __future__ import annotations

from typing import Any, Callable

from ..errors import UserError
from .base import Extractor

_FACTORIES: dict[str, Callable[[Any], Extractor]] = {}


def register_extractor(name: str):
    """Decorator: register ``factory(extract_cfg) -> Extractor`` under ``name``."""
    def deco(factory):
        _builtins()
        _FACTORIES[name] = factory
        return factory
    return deco


def unregister_extractor(name: str) -> None:
    _FACTORIES.pop(name, None)


def _heuristic(cfg: Any) -> Extractor:
    from .heuristic import HeuristicExtractor

    return HeuristicExtractor(max_pairs_per_doc=cfg.max_pairs_per_doc, min_question_chars=cfg.min_question_chars,
                              min_answer_chars=cfg.min_answer_chars, max_answer_chars=cfg.max_answer_chars,
                              heading_fallback=getattr(cfg, "heading_fallback", "section"))


def _openai(cfg: Any) -> Extractor:
    from .openai.extractor import OpenAIExtractor

    return OpenAIExtractor(cfg)


def _file(cfg: Any) -> Extractor:
    from .file import FileExtractor

    return FileExtractor(cfg.file.path, max_pairs_per_doc=cfg.max_pairs_per_doc)


def _builtins() -> None:
    _FACTORIES.setdefault("heuristic", _heuristic)
    _FACTORIES.setdefault("openai", _openai)
    _FACTORIES.setdefault("file", _file)


def extractors() -> tuple[str, ...]:
    _builtins()
    return tuple(_FACTORIES)


def make_extractor(cfg: Any) -> Extractor:
    """Build the extractor named by ``cfg.name`` (an :class:`~equal.config.ExtractConfig`)."""
    _builtins()
    factory = _FACTORIES.get(cfg.name)
    if factory is None:
        raise UserError(f"unknown extractor {cfg.name!r}; choose from {', '.join(_FACTORIES)}")
    ex = factory(cfg)
    rules = list(getattr(cfg, "drop_rules", None) or [])
    if rules:  # quality rules right after extraction (equal.extract.rules)
        from .rules import RuleFilteredExtractor

        ex = RuleFilteredExtractor(ex, rules)
    return ex
