"""Pytest fixtures for the OpenAI-protocol test server and small real documents.

Import them from ``tests/conftest.py``::

    from servers.fixtures import openai_server, corpus_docs, llm_config  # noqa: F401
"""

from __future__ import annotations

import json
from typing import Iterator

import pytest

from .openai_server import Faults, OpenAIServer


def read_docs(n: int, skip: int = 0, min_chars: int = 0, max_chars: int | None = None,
              id_prefixes: tuple[str, ...] = ()):
    """The first ``n`` documents of the shared corpus (after ``skip``) as :class:`equal.types.Document`,
    optionally only those whose id starts with one of ``id_prefixes`` (the source, e.g. ``"factbook-"``).

    Without the shared corpus the calling test is skipped (an error when ``CI`` is set): see ``tests/conftest.py``,
    the one place that knows where the data is."""
    from conftest import CORPUS, require_data
    from equal.types import Document

    require_data(CORPUS)
    docs = []
    with CORPUS.open(encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            text = rec["text"]
            if len(text) < min_chars or (max_chars is not None and len(text) > max_chars):
                continue
            if id_prefixes and not rec["id"].startswith(id_prefixes):
                continue
            if skip:
                skip -= 1
                continue
            docs.append(Document(index=len(docs), id=rec["id"], text=text, meta={"source": rec.get("source", "")}))
            if len(docs) >= n:
                break
    return docs


@pytest.fixture
def openai_server() -> Iterator[OpenAIServer]:
    """A running OpenAI-protocol server with no faults; set ``openai_server.faults`` in the test."""
    server = OpenAIServer(Faults()).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def corpus_docs():
    """24 real documents from the shared corpus (at most 3,000 characters each)."""
    return read_docs(24, max_chars=3000)


@pytest.fixture
def llm_config(openai_server, tmp_path):
    """An ExtractConfig for the ``openai`` extractor pointed at ``openai_server``, with a fresh cache."""
    from equal.config import ExtractConfig, LLMConfig

    return ExtractConfig(name="openai", cache_dir=str(tmp_path / "cache"), llm=LLMConfig(
        base_url=openai_server.url, model="test-model", api_key_env="EQUAL_TEST_API_KEY", timeout=30.0,
        concurrency=8, max_attempts=4, backoff_base=0.05, backoff_max=0.2, circuit_breaker_seconds=30.0,
        max_tokens=512))
