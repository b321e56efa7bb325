"""Deprecated: the ``openai`` extractor now lives in :mod:`equal.extract.openai`.

This module re-exports its public names so that ``from equal.extract.llm import OpenAIExtractor,
spend_cost, render, ...`` keeps working. Import from the package's modules instead:
:mod:`~equal.extract.openai.extractor` (``OpenAIExtractor``), :mod:`~equal.extract.openai.parse`
(``parse_pairs``, ``validate_pairs``, ``PAIRS_SCHEMA``), :mod:`~equal.extract.openai.prompt`
(``render``, ``read_prompt``), :mod:`~equal.extract.openai.spend` (``spend_cost``) and
:mod:`~equal.extract.openai.transport` (``CONTENT_ATTEMPTS``, ``USE_AIOHTTP``: set it there, not here).
"""

from __future__ import annotations

import warnings

from .base import EndpointDown, SpendCapReached, cut_text
from .openai.extractor import FORMAT_VERSION, OpenAIExtractor
from .openai.parse import PAIRS_SCHEMA, Validated, parse_pairs, validate_pairs
from .openai.prompt import CHARS_PER_TOKEN, read_prompt, render
from .openai.spend import spend_cost
from .openai.transport import CONTENT_ATTEMPTS, USE_AIOHTTP

__all__ = ["CHARS_PER_TOKEN", "CONTENT_ATTEMPTS", "EndpointDown", "FORMAT_VERSION", "OpenAIExtractor",
           "PAIRS_SCHEMA", "SpendCapReached", "USE_AIOHTTP", "Validated", "cut_text", "parse_pairs",
           "read_prompt", "render", "spend_cost", "validate_pairs"]

warnings.warn("equal.extract.llm is deprecated: import from equal.extract.openai", DeprecationWarning, stacklevel=2)
