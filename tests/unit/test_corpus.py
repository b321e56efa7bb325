"""Corpus readers: bad input is counted by reason, never fatal; formats agree; index reuse."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import CORPUS as REAL
from conftest import require_data
from equal.config import CorpusConfig
from equal.corpus import Corpus, CorpusError, content_id, detect_format


def real_records(n: int) -> list[dict]:
    """The first ``n`` records of the shared corpus (the test is skipped without it, an error when CI is set)."""
    require_data(REAL)
    out = []
    with open(REAL, "rb") as f:
        for line in f:
            out.append(json.loads(line))
            if len(out) == n:
                break
    return out


def line(rec) -> bytes:
    return (json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8")


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(lines))
    return path


def corpus_of(tmp_path: Path, lines: list[bytes], **opts) -> Corpus:
    return Corpus(write_lines(tmp_path / "c.jsonl", lines), CorpusConfig(**opts))


def all_docs(c: Corpus):
    return [d for batch in c.iter_batches(64) for d in batch]


def assert_one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


# ------------------------------------------------------------------ a real slice with bad lines mixed in
def test_real_slice_with_every_kind_of_bad_line(tmp_path):
    recs = real_records(200)
    long_text = "word " * 1500  # 7,500 characters, over max_chars below
    bad = {
        10: [b'{"id": "x1", "text": "torn line\n'],  # malformed_json
        20: [b"\n", b"   \t\r\n"],  # blank_line x2
        30: [b'[1, 2, 3]\n', b'"just a string"\n'],  # not_an_object x2
        40: [line({"id": "x2", "body": "no text field"})],  # missing_text
        50: [line({"id": "x3", "text": None})],  # missing_text (null)
        60: [line({"id": "x4", "text": 42}), line({"id": "x5", "text": ["a", "b"]})],  # non_string_text x2
        70: [line({"id": "x6", "text": ""}), line({"id": "x7", "text": " \n\t  "})],  # empty_text x2
        80: [line(recs[3])],  # duplicate_id (the first, earlier copy is kept)
        90: [line({"id": {"nested": 1}, "text": "an object as id"}), line({"id": True, "text": "a bool id"})],  # bad_id x2
        100: [b'{"id": "u1", "text": "caf\xe9 latin-1 byte"}\n'],  # kept, invalid_utf8
        110: [line({"id": "long1", "text": long_text})],  # kept, truncated
        120: [line({"text": "a document with no id at all"})],  # kept, generated_id
        130: [b"\x00\xff\xfe garbage \x80\n"],  # malformed_json (and its bytes replaced, not counted: not kept)
    }
    lines, expected_ids = [], []
    for i, rec in enumerate(recs):
        for b in bad.get(i, []):
            lines.append(b)
        lines.append(line(rec))
        expected_ids.append(rec["id"])
    # the kept extras, at their places in the file
    extras_before = {100: "u1", 110: "long1", 120: content_id("a document with no id at all")}
    for i in sorted(extras_before, reverse=True):
        expected_ids.insert(i, extras_before[i])
    c = corpus_of(tmp_path, lines, max_chars=5000)
    assert c.format == "jsonl"
    assert c.skip_counts() == {"malformed_json": 2, "blank_line": 2, "not_an_object": 2, "missing_text": 2,
                               "non_string_text": 2, "empty_text": 2, "duplicate_id": 1, "bad_id": 2}
    assert dict(c.notes) == {"invalid_utf8": 1, "truncated": 1, "generated_id": 1}
    docs = all_docs(c)
    assert [d.id for d in docs] == expected_ids
    assert [d.index for d in docs] == list(range(len(docs)))
    by_id = {d.id: d for d in docs}
    assert by_id["u1"].text == "caf\ufffd latin-1 byte"
    assert by_id["long1"].text == long_text[:5000]
    # real documents come back byte for byte, with their other fields as meta
    for rec in recs[:50]:
        d = by_id[rec["id"]]
        assert d.text == rec["text"]
        assert d.meta == {"source": rec["source"], "domain": rec["domain"]}


def test_too_long_skip(tmp_path):
    lines = [line({"id": "a", "text": "x" * 11}), line({"id": "b", "text": "x" * 10}), line({"id": "c", "text": "y"})]
    c = corpus_of(tmp_path, lines, max_chars=10, too_long="skip")
    assert c.skip_counts() == {"too_long": 1}
    assert not c.notes
    assert [d.id for d in all_docs(c)] == ["b", "c"]


def test_truncate_to_blank_is_empty(tmp_path):
    lines = [line({"id": "a", "text": " " * 20 + "tail"}), line({"id": "b", "text": "ok"})]
    c = corpus_of(tmp_path, lines, max_chars=10)
    assert c.skip_counts() == {"empty_text": 1}
    assert not c.notes  # the skipped document's truncation is not counted as a repair


def test_min_chars_counts_non_whitespace(tmp_path):
    lines = [line({"id": "a", "text": "a b c d"}), line({"id": "b", "text": "abcde"}), line({"id": "c", "text": "    ab"})]
    c = corpus_of(tmp_path, lines, min_chars=5)
    assert c.skip_counts() == {"empty_text": 2}
    assert [d.id for d in all_docs(c)] == ["b"]


def test_repairs_of_skipped_documents_are_not_counted(tmp_path):
    lines = [line({"text": "same"}), line({"text": "same"}), b'{"id": "z", "text": "\xff"}\n',
             line({"id": "k", "text": "kept"})]
    c = corpus_of(tmp_path, lines)
    assert c.skip_counts() == {"duplicate_id": 1}  # same content, same generated id: first kept
    assert dict(c.notes) == {"generated_id": 1, "invalid_utf8": 1}


def test_tricky_json_lines(tmp_path):
    lines = [
        b"1" * 5000 + b"\n",  # an integer over Python's digit limit: ValueError, not JSONDecodeError
        b"[" * 100_000 + b"\n",  # nesting too deep
        b'{"id": "n", "text": "big number", "n": 1' + b"0" * 5000 + b"}\n",  # valid JSON, unconvertible number
        b"\xef\xbb\xbf" + line({"id": "bom", "text": "after a byte-order mark"}),
        b'{"id": "sur", "text": "lone \\ud800 surrogate", "m": ["\\udfff"]}\n',
        b'{"id": "pair", "text": "emoji \\ud83d\\ude00 ok"}\n',
        b'{"id": 7, "text": "integer id"}\n',
        b'{"id": 8.0, "text": "integral float id"}\n',
        b'{"id": 8.5, "text": "fractional float id"}\n',
        b'{"id": "  ", "text": "blank id"}\n',
        b'{"id": "nan", "text": NaN}\n',
        b'{"id": "crlf", "text": "windows line"}\r\n',
        b'{"id": "eof", "text": "no final newline"}',
    ]
    c = corpus_of(tmp_path, lines)
    assert c.skip_counts() == {"malformed_json": 3, "bad_id": 1, "non_string_text": 1}
    assert dict(c.notes) == {"invalid_utf8": 1, "generated_id": 1}
    docs = {d.id: d for d in all_docs(c)}
    assert list(docs) == ["bom", "sur", "pair", "7", "8", content_id("blank id"), "crlf", "eof"]
    assert docs["sur"].text == "lone \ufffd surrogate" and docs["sur"].meta == {"m": ["\ufffd"]}
    assert docs["pair"].text == "emoji \U0001F600 ok"
    for d in docs.values():
        d.text.encode("utf-8")  # every text can be written out


# ------------------------------------------------------------------ fatal problems: one-line CorpusError
def test_missing_corpus(tmp_path):
    with pytest.raises(CorpusError) as e:
        Corpus(tmp_path / "nope.jsonl")
    assert "corpus not found" in assert_one_line(e)


def test_empty_corpus(tmp_path):
    with pytest.raises(CorpusError) as e:
        corpus_of(tmp_path, [])
    assert "holds no documents (it is empty)" in assert_one_line(e)


def test_no_usable_documents(tmp_path):
    with pytest.raises(CorpusError) as e:
        corpus_of(tmp_path, [b"not json\n", b"\n", line({"id": "a", "text": "  "}), line([1])])
    msg = assert_one_line(e)
    assert "no usable documents" in msg
    assert "malformed_json=1" in msg and "empty_text=1" in msg and "blank_line=1" in msg


def test_jsonl_wrong_text_field_names_the_fields(tmp_path):
    with pytest.raises(CorpusError) as e:
        corpus_of(tmp_path, [line({"id": str(i), "content": "x", "url": "u"}) for i in range(5)])
    msg = assert_one_line(e)
    assert "missing_text=5" in msg and "fields seen: id, content, url" in msg and "text_field" in msg


def test_unreadable_file(tmp_path, monkeypatch):
    p = write_lines(tmp_path / "c.jsonl", [line({"id": "a", "text": "t"})])
    if os.geteuid() != 0:  # root reads everything: the simulated errors below stand in
        p.chmod(0)
        try:
            with pytest.raises(CorpusError) as e:
                Corpus(p)
            assert "cannot read corpus" in assert_one_line(e)
        finally:
            p.chmod(0o644)
    import equal.corpus as corpus_mod

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(corpus_mod._JsonlSource, "scan", denied)
    with pytest.raises(CorpusError) as e:
        Corpus(p)
    assert assert_one_line(e).endswith("cannot read corpus " + str(p) + ": Permission denied")
    monkeypatch.setattr(corpus_mod, "_file_fingerprint", denied)
    with pytest.raises(CorpusError, match="Permission denied"):
        Corpus(p)


def test_bad_options_and_formats(tmp_path):
    p = write_lines(tmp_path / "c.jsonl", [line({"id": "a", "text": "t"})])
    with pytest.raises(CorpusError, match="max_chars"):
        Corpus(p, CorpusConfig(max_chars=0))
    with pytest.raises(CorpusError, match="too_long"):
        Corpus(p, CorpusConfig(too_long="drop"))  # type: ignore[arg-type]
    with pytest.raises(CorpusError, match="suffix"):
        Corpus(write_lines(tmp_path / "c.txt", [line({"id": "a", "text": "t"})]))
    bare = tmp_path / "bare"  # a folder without shards (a folder of JSONL files is a sharded corpus)
    bare.mkdir()
    (bare / "c.txt").write_bytes(line({"id": "a", "text": "t"}))
    with pytest.raises(CorpusError, match="folder"):
        Corpus(bare, CorpusConfig(format="jsonl"))
    with pytest.raises(CorpusError, match="cannot tell"):
        Corpus(bare)
    with pytest.raises(CorpusError, match="cannot read Parquet"):
        Corpus(p, CorpusConfig(format="parquet"))
    assert detect_format(Path("x.JSONL")) == "jsonl" and detect_format(Path("x.parquet")) == "parquet"


def test_parquet_wrong_text_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": ["a"], "content": ["x"], "lang": ["en"]}), tmp_path / "c.parquet")
    with pytest.raises(CorpusError) as e:
        Corpus(tmp_path / "c.parquet")
    msg = assert_one_line(e)
    assert "text field 'text' not found" in msg and "available columns: id, content, lang" in msg
    c = Corpus(tmp_path / "c.parquet", CorpusConfig(text_field="content"))
    assert [(d.id, d.text, d.meta) for d in c.get([0])] == [("a", "x", {"lang": "en"})]


def test_hf_wrong_text_column(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"id": ["a"], "body": ["x"]}).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(CorpusError) as e:
        Corpus(tmp_path / "ds")
    assert "available columns: id, body" in assert_one_line(e)


# ------------------------------------------------------------------ the three readers agree
def mixed_records() -> list[dict]:
    recs = [{"id": r["id"], "text": r["text"], "source": r["source"], "domain": r["domain"]} for r in real_records(60)]
    extra = [
        {"id": None, "text": "no id here", "source": "s", "domain": "d"},  # generated_id
        {"id": "e1", "text": "", "source": "s", "domain": "d"},  # empty_text
        {"id": "e2", "text": None, "source": "s", "domain": "d"},  # missing_text
        {"id": recs[5]["id"], "text": "duplicate", "source": "s", "domain": "d"},  # duplicate_id
        {"id": "e3", "text": "z" * 50, "source": "s", "domain": "d"},  # truncated
    ]
    for k, rec in enumerate(extra):
        recs.insert(7 + 11 * k, rec)
    return recs


def write_all_formats(tmp_path: Path, recs: list[dict]) -> dict[str, Path]:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    jsonl = write_lines(tmp_path / "c.jsonl", [line(r) for r in recs])
    table = pa.Table.from_pylist(recs)
    pq.write_table(table, tmp_path / "c.parquet", row_group_size=7)  # many row groups
    folder = tmp_path / "pq"
    folder.mkdir()
    pq.write_table(table.slice(0, 30), folder / "part-0.parquet", row_group_size=8)
    pq.write_table(table.slice(30), folder / "part-1.parquet", row_group_size=9)
    datasets.Dataset.from_list(recs).save_to_disk(str(tmp_path / "ds"))
    return {"jsonl": jsonl, "parquet": tmp_path / "c.parquet", "folder": folder, "hf": tmp_path / "ds"}


def test_readers_return_the_same_documents(tmp_path):
    pytest.importorskip("datasets")
    recs = mixed_records()
    paths = write_all_formats(tmp_path, recs)
    opts = CorpusConfig(max_chars=4000)
    seen = {}
    for name, p in paths.items():
        c = Corpus(p, opts)
        assert c.format == {"folder": "parquet"}.get(name, name)
        assert c.skip_counts() == {"empty_text": 1, "missing_text": 1, "duplicate_id": 1}, name
        docs = all_docs(c)
        seen[name] = ([(d.index, d.id, d.text, d.meta) for d in docs], dict(c.notes))
        # get() in an arbitrary order, with repeats, matches the streamed documents
        order = [len(c) - 1, 3, 0, 3, 41, 12]
        assert [(d.index, d.id) for d in c.get(order)] == [(docs[i].index, docs[i].id) for i in order]
        assert [d.id for d in c.get(np.array(order))] == [docs[i].id for i in order]
        assert c.get([]) == []
        with pytest.raises(IndexError):
            c.get([len(c)])
        with pytest.raises(IndexError):
            c.get([-1])
    first = seen["jsonl"]
    assert len(first[0]) == len(recs) - 3
    for name, got in seen.items():
        assert got == first, name
    assert first[0][7][1] == content_id("no id here")
    assert first[1] == {"generated_id": 1}


def test_truncation_and_notes_same_in_all_formats(tmp_path):
    pytest.importorskip("datasets")
    paths = write_all_formats(tmp_path, mixed_records())
    for p in paths.values():
        c = Corpus(p, CorpusConfig(max_chars=40))
        assert c.notes["truncated"] >= 1
        assert all(len(d.text) <= 40 for d in c.get(range(len(c))))


def test_iter_batches_ranges(tmp_path):
    c = corpus_of(tmp_path, [line({"id": str(i), "text": f"t{i}"}) for i in range(10)])
    assert [[d.id for d in b] for b in c.iter_batches(4)] == [["0", "1", "2", "3"], ["4", "5", "6", "7"], ["8", "9"]]
    assert [d.id for b in c.iter_batches(3, start=2, stop=6) for d in b] == ["2", "3", "4", "5"]
    assert [d.id for b in c.iter_batches(100, start=-5, stop=99) for d in b] == [str(i) for i in range(10)]
    with pytest.raises(ValueError):
        next(c.iter_batches(0))


# ------------------------------------------------------------------ the saved index
def test_index_reused_and_rebuilt_when_the_file_changes(tmp_path, monkeypatch):
    recs = real_records(200)
    lines = [line(r) for r in recs]
    lines.insert(5, b"broken\n")
    lines.insert(9, line({"text": "anonymous"}))
    p = write_lines(tmp_path / "c.jsonl", lines)
    idx = tmp_path / "state"
    first = Corpus(p, index_dir=idx)
    assert (idx / "corpus_index.json").is_file() and (idx / "corpus_positions.npy").is_file()

    builds = []
    real_build = Corpus._build_index
    monkeypatch.setattr(Corpus, "_build_index", lambda self, progress: (builds.append(1), real_build(self, progress)))

    again = Corpus(p, index_dir=idx)
    assert builds == []  # reused
    assert np.array_equal(again.positions, first.positions)
    assert again.skipped == first.skipped == {"malformed_json": 1}
    assert again.notes == first.notes == {"generated_id": 1}
    assert [d.id for d in again.get([0, 100, 200])] == [d.id for d in first.get([0, 100, 200])]

    # other options: rebuilt
    Corpus(p, CorpusConfig(max_chars=500), index_dir=idx)
    assert builds == [1]
    Corpus(p, index_dir=idx)
    assert builds == [1, 1]

    # the file changes (a line dropped): rebuilt, and the new index is right
    write_lines(p, lines[:100] + lines[101:])
    changed = Corpus(p, index_dir=idx)
    assert builds == [1, 1, 1]
    assert len(changed) == len(first) - 1
    assert np.array_equal(changed.positions, Corpus(p).positions)  # (a fresh build, counted too)
    builds.clear()

    # same size, same mtime, different bytes at the end: still rebuilt
    st = p.stat()
    data = bytearray(p.read_bytes())
    data[-3] = ord("Q") if data[-3] != ord("Q") else ord("R")
    p.write_bytes(bytes(data))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    Corpus(p, index_dir=idx)
    assert builds == [1]
    Corpus(p, index_dir=idx)
    assert builds == [1]


def test_corrupt_or_torn_index_is_rebuilt(tmp_path):
    p = write_lines(tmp_path / "c.jsonl", [line({"id": str(i), "text": f"t{i}"}) for i in range(20)])
    idx = tmp_path / "state"
    good = Corpus(p, index_dir=idx)
    (idx / "corpus_positions.npy").write_bytes(b"not numpy")
    assert np.array_equal(Corpus(p, index_dir=idx).positions, good.positions)
    # positions from another build, metadata of this one (a crash between the two writes)
    np.save(idx / "corpus_positions.npy", good.positions[:-1])
    assert np.array_equal(Corpus(p, index_dir=idx).positions, good.positions)
    (idx / "corpus_index.json").write_text("{")
    assert np.array_equal(Corpus(p, index_dir=idx).positions, good.positions)
    meta = json.loads((idx / "corpus_index.json").read_text())
    del meta["skipped"]
    (idx / "corpus_index.json").write_text(json.dumps(meta))
    c = Corpus(p, index_dir=idx)
    assert np.array_equal(c.positions, good.positions) and c.skip_counts() == {}


def test_index_dir_not_writable_is_not_fatal(tmp_path):
    p = write_lines(tmp_path / "c.jsonl", [line({"id": "a", "text": "t"})])
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert len(Corpus(p, index_dir=blocker / "sub")) == 1


def test_changed_after_indexing_is_reported(tmp_path):
    p = write_lines(tmp_path / "c.jsonl", [line({"id": str(i), "text": f"text {i}"}) for i in range(10)])
    c = Corpus(p)
    p.write_bytes(b"x" * p.stat().st_size)
    with pytest.raises(CorpusError, match="changed since it was indexed"):
        c.get([3])


# ------------------------------------------------------------------ ids and meta
def test_generated_ids_and_meta(tmp_path):
    lines = [line({"text": "alpha", "lang": "en", "tags": ["a", "b"], "n": 3}),
             line({"id": "", "text": "beta", "extra": {"k": None}}),
             line({"doc_id": "custom", "text": "gamma"})]
    c = corpus_of(tmp_path, lines)
    d = all_docs(c)
    assert [x.id for x in d] == [content_id("alpha"), content_id("beta"), content_id("gamma")]
    assert d[0].meta == {"lang": "en", "tags": ["a", "b"], "n": 3}
    assert d[1].meta == {"extra": {"k": None}}
    assert d[2].meta == {"doc_id": "custom"}
    assert c.notes == {"generated_id": 3}
    c2 = Corpus(tmp_path / "c.jsonl", CorpusConfig(id_field="doc_id"))
    assert [x.id for x in all_docs(c2)][2] == "custom"
    assert all_docs(c2)[1].meta == {"id": "", "extra": {"k": None}}
    # the id is a hash of the whole text, not of its truncated part
    c3 = Corpus(tmp_path / "c.jsonl", CorpusConfig(max_chars=2))
    assert all_docs(c3)[0].id == content_id("alpha") and all_docs(c3)[0].text == "al"


def test_indexing_the_real_corpus_is_fast(tmp_path):
    import time

    require_data(REAL)
    # CPU time of this thread, not wall time: other processes on a loaded machine do not count
    t = time.thread_time()
    c = Corpus(REAL)
    cpu = time.thread_time() - t
    assert len(c) == 6109 and c.skip_counts() == {}
    assert cpu < 3.0, cpu  # about 0.1 s here; generous for slow CI machines


# ------------------------------------------------------------------ property: junk never breaks the JSONL reader
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def _junk_json(value) -> bytes:
    if isinstance(value, dict):
        value.pop("text", None)  # an object with a text field could be a real document
    return json.dumps(value).encode()


_bad_line = st.one_of(st.binary(max_size=60), _json_values.map(_junk_json),
                      st.sampled_from([b"", b" ", b"{", b'{"text": 1}', b'{"text": "  "}', b"\xff\xfe", b"null",
                                       b"1" * 5000, b"[" * 50_000, b"\xef\xbb\xbf{}", b'{"text": "\\ud800"',
                                       b'{"id": true, "text": "bool id"}', b'{"text": ["x"]}']))
_good_rec = st.fixed_dictionaries({
    "id": st.text(min_size=1, max_size=12).filter(str.strip) | st.integers(min_value=0, max_value=10**6),
    "text": st.text(min_size=1, max_size=80).filter(str.strip),
}, optional={"meta": _json_values})


def _could_be_a_document(segment: bytes) -> bool:
    try:
        rec = json.loads(segment.decode("utf-8", "replace").strip().lstrip("\ufeff"))
    except (ValueError, RecursionError):
        return False
    return isinstance(rec, dict) and isinstance(rec.get("text"), str) and bool(rec["text"].strip())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(st.tuples(st.booleans(), _good_rec, _bad_line), max_size=25),
       ascii_only=st.booleans())
def test_jsonl_reader_survives_junk(items, ascii_only):
    data, expected, ids = [], [], set()
    for is_good, rec, bad in items:
        if is_good:
            if str(rec["id"]) in ids:
                continue
            ids.add(str(rec["id"]))
            data.append((json.dumps(rec, ensure_ascii=ascii_only) + "\n").encode("utf-8"))
            expected.append((str(rec["id"]), rec["text"], {"meta": rec["meta"]} if "meta" in rec else {}))
        else:
            assume(not any(_could_be_a_document(seg) for seg in bad.split(b"\n")))
            data.append(bad + b"\n")
    blob = b"".join(data)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "c.jsonl"
        p.write_bytes(blob)
        try:
            c = Corpus(p)
        except CorpusError as e:
            assert not expected, f"good lines present but: {e}"
            assert "no usable documents" in str(e) or "no documents" in str(e)
            assert "\n" not in str(e)
            return
        docs = [doc for batch in c.iter_batches(7) for doc in batch]
    assert [(x.id, x.text, x.meta) for x in docs] == expected
    assert len(docs) + sum(c.skipped.values()) == blob.count(b"\n")
