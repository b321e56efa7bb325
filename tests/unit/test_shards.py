"""Sharded corpora: a folder or glob of JSONL (plain, .gz, .zst) and Parquet shards reads as one corpus."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import read_corpus
from equal.config import CorpusConfig
from equal.corpus import SHARD_BITS, Corpus, CorpusError


def _line(rec) -> bytes:
    return (json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8")


def write_shards(folder: Path, recs: list[dict], bad: bool = True) -> list[Path]:
    """``recs`` split over five shards of four kinds (names sort in that order), with bad lines in two."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    folder.mkdir(parents=True, exist_ok=True)
    parts = np.array_split(np.arange(len(recs)), 5)
    paths = []
    for i, idx in enumerate(parts):
        rows = [recs[j] for j in idx]
        body = b"".join(_line(r) for r in rows)
        if bad and i in (1, 3):
            body = b"not json\n" + body + b"\n"  # a malformed and a blank line
        if i == 0:
            p = folder / "a-000.jsonl"
            p.write_bytes(body)
        elif i == 1:
            p = folder / "a-001.jsonl.gz"
            p.write_bytes(gzip.compress(body))
        elif i == 2:
            p = folder / "a-002.parquet"
            pq.write_table(pa.Table.from_pylist(rows), p, row_group_size=5)
        elif i == 3:
            p = folder / "sub" / "a-003.jsonl.zst"  # sub/ sorts after a-*: the folder is searched recursively
            p.parent.mkdir(exist_ok=True)
            p.write_bytes(zstandard.ZstdCompressor().compress(body))
        else:
            p = folder / "z-004.ndjson"
            p.write_bytes(body)
        paths.append(p)
    (folder / "README.txt").write_text("not a shard")  # ignored
    (folder / "meta.json").write_text('{"not": "a shard"}')  # plain .json in a folder: metadata, ignored
    return paths


@pytest.fixture(scope="module")
def recs():
    out = read_corpus(120)
    for r in out:
        r.pop("domain")  # the Parquet shard must carry the same fields as the others
    return out


def _docs(c: Corpus):
    return [(d.id, d.text, d.meta) for b in c.iter_batches(37) for d in b]


def test_folder_and_glob_of_mixed_shards_read_as_one_corpus(tmp_path, recs):
    single = tmp_path / "one.jsonl"
    single.write_bytes(b"".join(_line(r) for r in recs))
    paths = write_shards(tmp_path / "shards", recs)
    ref = Corpus(single)
    folder = Corpus(tmp_path / "shards")
    assert folder.format == "shards" and [Path(p).name for p in folder.shards] == [p.name for p in sorted(
        paths, key=str)]
    assert _docs(folder) == _docs(ref)
    assert folder.skipped == {"malformed_json": 2, "blank_line": 2}
    # positions are (shard, offset) with offsets inside each shard: rows for Parquet, bytes elsewhere
    shard = folder.positions >> SHARD_BITS
    assert np.array_equal(np.unique(shard), np.arange(5)) and (np.diff(folder.positions) > 0).all()
    local = folder.positions & ((1 << SHARD_BITS) - 1)
    assert local[shard == 2].tolist() == list(range((shard == 2).sum()))
    # random access, shards interleaved, repeats allowed
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(ref), 60)
    assert [d.id for d in folder.get(idx)] == [recs[i]["id"] for i in idx]
    # a glob of the JSONL-like shards only (no Parquet)
    g = Corpus(str(tmp_path / "shards" / "**" / "*.*[ls]*"))
    want = [r["id"] for k, part in enumerate(np.array_split(np.arange(len(recs)), 5)) if k != 2 for r in
            (recs[j] for j in part)]
    assert [d[0] for d in _docs(g)] == want


def test_one_file_keeps_its_positions_and_a_compressed_file_reads_alone(tmp_path, recs):
    p = tmp_path / "c.jsonl"
    p.write_bytes(b"".join(_line(r) for r in recs))
    offsets = np.cumsum([0] + [len(_line(r)) for r in recs[:-1]])
    c = Corpus(p)
    assert c.format == "jsonl" and c.positions.tolist() == offsets.tolist()  # as before shards existed
    gz = tmp_path / "c.jsonl.gz"
    gz.write_bytes(gzip.compress(p.read_bytes()))
    z = Corpus(gz)
    assert z.format == "shards" and z.positions.tolist() == offsets.tolist()  # shard 0: plain offsets
    assert _docs(z) == _docs(c)


def test_index_reused_across_shards_and_rebuilt_when_one_changes(tmp_path, recs, monkeypatch):
    import equal.corpus as corpus_mod

    write_shards(tmp_path / "s", recs)
    idx = tmp_path / "state"
    first = Corpus(tmp_path / "s", index_dir=idx)
    key = first.content_key()
    calls = []
    real = corpus_mod.Corpus._build_index
    monkeypatch.setattr(corpus_mod.Corpus, "_build_index", lambda self, progress: (calls.append(1),
                                                                                     real(self, progress)))
    again = Corpus(tmp_path / "s", index_dir=idx)
    assert calls == [] and again.content_key() == key and _docs(again) == _docs(first)
    # one shard gains a document: the index is rebuilt and the content key moves
    extra = {"id": "extra-doc", "text": "an extra document of some length", "source": "x"}
    last = tmp_path / "s" / "z-004.ndjson"
    last.write_bytes(last.read_bytes() + _line(extra))
    changed = Corpus(tmp_path / "s", index_dir=idx)
    assert calls == [1] and len(changed) == len(first) + 1 and changed.content_key() != key
    assert changed.get([len(changed) - 1])[0].id == "extra-doc"
    # a new shard too
    (tmp_path / "s" / "z-005.jsonl").write_bytes(_line({"id": "more", "text": "one more document"}))
    assert len(Corpus(tmp_path / "s", index_dir=idx)) == len(first) + 2 and calls == [1, 1]


def test_duplicate_ids_across_shards_and_empty_globs(tmp_path):
    a, b = tmp_path / "p" / "a.jsonl", tmp_path / "p" / "b.jsonl"
    a.parent.mkdir()
    a.write_bytes(_line({"id": "x", "text": "first"}) + _line({"id": "y", "text": "second"}))
    b.write_bytes(_line({"id": "x", "text": "again"}) + _line({"id": "z", "text": "third"}))
    c = Corpus(tmp_path / "p")
    assert [d.text for d in c.get(range(len(c)))] == ["first", "second", "third"]
    assert c.skipped == {"duplicate_id": 1}
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "pq").mkdir()  # Parquet files alone keep their older reading: rows numbered across files
    for i in range(2):
        pq.write_table(pa.Table.from_pylist([{"id": f"p{i}{j}", "text": f"row {j}"} for j in range(3)]),
                       tmp_path / "pq" / f"{i}.parquet")
    (tmp_path / "pq" / "_meta.json").write_text("{}")
    pqc = Corpus(tmp_path / "pq")
    assert pqc.format == "parquet" and pqc.positions.tolist() == list(range(6))
    with pytest.raises(CorpusError, match="no files match"):
        Corpus(str(tmp_path / "p" / "*.parquet"))
    with pytest.raises(CorpusError, match="not found"):
        Corpus(tmp_path / "nothing-here")


def test_truncated_gzip_shard_keeps_what_it_could_read(tmp_path, recs):
    body = b"".join(_line(r) for r in recs[:40])
    z = gzip.compress(body)
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a.jsonl.gz").write_bytes(z[: len(z) // 2])
    (tmp_path / "t" / "b.jsonl").write_bytes(b"".join(_line(r) for r in recs[40:50]))
    c = Corpus(tmp_path / "t", CorpusConfig())
    ids = [d.id for d in c.get(range(len(c)))]
    assert 0 < len(ids) < 50 and ids[-10:] == [r["id"] for r in recs[40:50]]
    assert ids[:-10] == [r["id"] for r in recs[: len(ids) - 10]]
    assert os.path.exists(tmp_path / "t" / "a.jsonl.gz")
