"""bench/filter_table.py: a table with only the pairs that pass the hygiene's quality rules, vectors aligned."""

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import filter_table as F  # noqa: E402


def _table(path: Path, docs: list[tuple[str, str, list[list[str]]]], dim: int = 4) -> np.ndarray:
    path.mkdir()
    lines = [json.dumps({"doc_id": d, "status": s, "tokens": 0, "pairs": p}) + "\n" for d, s, p in docs]
    (path / "docs.jsonl").write_text("".join(lines))
    n = sum(len(p) for _, _, p in docs)
    vec = np.arange(n * dim, dtype=np.float32).reshape(n, dim)
    (path / "vectors.f32").write_bytes(vec.tobytes())
    (path / "progress.json").write_text(json.dumps({"docs": len(docs), "docs_bytes": len("".join(lines).encode()),
                                                    "vec_bytes": vec.nbytes}))
    (path / "meta.json").write_text(json.dumps({"version": 2, "key": {"extractor": {"name": "heuristic"},
                                                "embedder": "e", "corpus": "c", "n_docs": len(docs)},
                                                "n_docs": len(docs), "dim": dim, "complete": True}))
    return vec


def test_only_pairs_that_pass_the_rules_are_kept_with_their_own_vectors(tmp_path):
    from equal.experiments.table import ExtractionTable

    good = ["What is the sum of 3 and 4?", "The sum of 3 and 4 is 7."]
    heading = ["Practice Problems", "## Exercises"]
    vec = _table(tmp_path / "t", [("a", "ok", [heading, good]), ("b", "ok", [heading]), ("c", "failed", []),
                                  ("d", "ok", [good, good])])
    c = F.filter_table(tmp_path / "t", tmp_path / "k")
    t = ExtractionTable.load(tmp_path / "k")
    assert c == {"docs": 4, "pairs": 5, "kept_pairs": 3, "docs_with_pairs": 2, "docs_emptied": 1}
    assert t.status == ["ok", "empty", "failed", "ok"] and t.n_pairs.tolist() == [1, 0, 0, 2]
    assert [p.question for p in t.pairs_of(0)] == [good[0]]
    # each kept pair keeps its own vector: rows 1 (doc a's second pair), 3 and 4 of the source
    assert np.array_equal(np.asarray(t.vectors), vec[[1, 3, 4]])
    assert t.meta["key"]["extractor"]["quality_rules"] and t.meta["key"]["embedder"] == "e"
    assert (tmp_path / "k" / "pairs.jsonl").is_file()
