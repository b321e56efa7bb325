import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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
