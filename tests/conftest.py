import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# caches (extractions, shared corpus embeddings) live in a per-session folder, never in ~/.cache
import tempfile  # noqa: E402

os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="equal-test-cache-")

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EQUAL_SHARED_DATA", ROOT.parent / "shared" / "data"))
CORPUS = DATA / "corpus.jsonl"
REF_MATH = DATA / "reference_math.jsonl"
REF_CODE = DATA / "reference_code.jsonl"


def pytest_collection_modifyitems(config, items):
    if not CORPUS.exists():
        skip = pytest.mark.skip(reason=f"shared test data not found at {DATA}")
        for item in items:
            item.add_marker(skip)


def read_corpus(n=None):
    out = []
    with open(CORPUS, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if n is not None and i >= n:
                break
            out.append(json.loads(line))
    return out


def write_jsonl(path, records):
    path = Path(path)
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


@pytest.fixture(scope="session")
def corpus_records():
    return read_corpus()


@pytest.fixture(scope="session")
def embedder():
    from equal.embed import Embedder

    return Embedder(max_seq_length=128)


from servers.fixtures import corpus_docs, llm_config, openai_server  # noqa: E402,F401


def small_config(tmp_path, corpus, reference=REF_MATH, **dotted):
    """A config for fast runs on a slice: shorter token limit, small chunks."""
    from equal import Config

    base = {"embed.max_seq_length": 128, "embed.chunk_docs": 256}
    base.update(dotted)
    return Config(corpus=str(corpus), reference=str(reference), out=str(tmp_path / "run")).replace(**base)


@pytest.fixture(scope="session")
def slice_path(tmp_path_factory):
    """The first 1,500 documents of the shared corpus (its order is a seeded shuffle)."""
    p = tmp_path_factory.mktemp("data") / "slice.jsonl"
    with open(CORPUS, "rb") as src, open(p, "wb") as dst:
        for i, line in enumerate(src):
            if i >= 1500:
                break
            dst.write(line)
    return p
