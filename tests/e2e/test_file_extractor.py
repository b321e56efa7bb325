"""The ``file`` extractor: pairs made elsewhere, looked up by document id."""

import json
from collections import defaultdict

import pytest
import zstandard

from equal import run
from equal.extract.file import FileExtractor, PairsFileError
from equal.extract.registry import make_extractor
from equal.experiments.table import ExtractionTable, extract_all
from equal.io import read_jsonl
from equal.types import Document

from conftest import small_config, write_slice


def _doc(i, doc_id):
    return Document(index=i, id=doc_id, text="some text")


def test_lookup_statuses_provenance_and_bad_lines(tmp_path):
    p = tmp_path / "pairs.jsonl"
    lines = [
        json.dumps({"doc_id": "a", "pairs": [{"question": "What is 2+2?", "answer": "4", "score": 0.3}],
                    "model": "big-llm"}),
        json.dumps({"doc_id": "b", "pairs": []}),
        json.dumps({"doc_id": "c", "pairs": [{"question": "Q?", "answer": "A", "extractor": "heuristic",
                                             "rule": "qa_marker"}]}),
        json.dumps({"doc_id": "d", "pairs": [{"question": "no answer"}]}),
        "{not json",
        json.dumps({"pairs": []}),
        json.dumps([1, 2]),
        "",
    ]
    p.write_text("\n".join(lines) + "\n")
    ex = FileExtractor(p, max_pairs_per_doc=8)
    got = ex.extract([_doc(0, "a"), _doc(1, "b"), _doc(2, "c"), _doc(3, "d"), _doc(4, "zzz")])
    assert [(e.status, e.reason) for e in got] == [("ok", ""), ("empty", ""), ("ok", ""), ("failed", "bad_line"),
                                                   ("failed", "not_in_file")]
    a, c = got[0].pairs[0], got[2].pairs[0]
    assert (a.question, a.answer, a.doc_id, a.extractor, a.rule) == ("What is 2+2?", "4", "a", "file", "")
    assert (c.extractor, c.rule) == ("heuristic", "qa_marker")  # provenance carried through
    st = ex.stats()
    assert st["docs_in_file"] == 4 and st["not_in_file"] == 1 and st["bad_line"] == 1 and st["ok"] == 2
    assert st["skipped_lines"] == {"malformed_json": 1, "no_doc_id": 1, "not_an_object": 1}


def test_fingerprint_is_the_content_hash(tmp_path):
    p = tmp_path / "pairs.jsonl"
    body = json.dumps({"doc_id": "a", "pairs": [{"question": "What is 2+2?", "answer": "4"}]}) + "\n"
    p.write_text(body)
    fp1 = FileExtractor(p).fingerprint()
    # the same content compressed (and at another path) keeps the fingerprint
    z = tmp_path / "other.jsonl.zst"
    z.write_bytes(zstandard.ZstdCompressor().compress(body.encode()))
    zx = FileExtractor(z)
    assert zx.fingerprint() == fp1
    assert zx.extract([_doc(0, "a")])[0].pairs[0].answer == "4"
    p.write_text(body.replace('"4"', '"four"'))
    assert FileExtractor(p).fingerprint() != fp1


def test_clear_errors(tmp_path):
    from equal import Config

    with pytest.raises(PairsFileError, match="extract.file.path"):
        make_extractor(Config().extract.__class__(name="file"))
    with pytest.raises(PairsFileError, match="not found"):
        FileExtractor(tmp_path / "nope.jsonl")
    p = tmp_path / "dup.jsonl"
    p.write_text('{"doc_id": "a", "pairs": []}\n{"doc_id": "a", "pairs": []}\n')
    with pytest.raises(PairsFileError, match="line 2"):
        FileExtractor(p)
    z = tmp_path / "cut.jsonl.zst"
    z.write_bytes(zstandard.ZstdCompressor().compress(b'{"doc_id": "a", "pairs": []}\n' * 200)[:-6])
    with pytest.raises(PairsFileError, match="damaged"):
        FileExtractor(z)


@pytest.mark.slow
def test_a_file_run_fed_a_live_runs_pairs_gives_that_run(tmp_path):
    corpus = write_slice(tmp_path / "small.jsonl", 300)
    cfg = small_config(tmp_path, corpus, budget=0.15)
    live = tmp_path / "live"
    run(cfg.replace(out=str(live)), progress=False)
    by_doc = defaultdict(list)
    for r in read_jsonl(live / "dataset.jsonl"):
        by_doc[r["doc_id"]].append({k: r[k] for k in ("question", "answer", "extractor", "rule") if k in r})
    extracted = list(read_jsonl(live / "extracted.jsonl"))
    assert len(by_doc) > 10 and "failed" not in {e["status"] for e in extracted}
    missing = extracted[-1]["doc_id"]  # the last document extracted is left out of the file: it must fail
    pairs = tmp_path / "pairs.jsonl.zst"
    lines = [json.dumps({"doc_id": e["doc_id"], "pairs": by_doc.get(e["doc_id"], []), "note": "ignored"})
             for e in extracted]
    pairs.write_bytes(zstandard.ZstdCompressor().compress(("\n".join(lines) + "\n").encode()))
    fed = tmp_path / "fed"
    run(cfg.replace(out=str(fed), **{"extract.name": "file", "extract.file.path": str(pairs)}), progress=False)
    for name in ("dataset.jsonl", "rounds.jsonl", "extracted.jsonl"):
        assert (fed / name).read_bytes() == (live / name).read_bytes(), name
    # the same file without one document's line: that document is failed, the rest picked alike
    short = tmp_path / "short.jsonl"
    short.write_text("".join(line + "\n" for line, e in zip(lines, extracted) if e["doc_id"] != missing))
    cut = tmp_path / "cut"
    run(cfg.replace(out=str(cut), **{"extract.name": "file", "extract.file.path": str(short)}), progress=False)
    got = {e["doc_id"]: e for e in read_jsonl(cut / "extracted.jsonl")}
    assert got[missing]["status"] == "failed"
    summary = json.loads((cut / "summary.json").read_text())
    assert "not_in_file" in json.dumps(summary)


@pytest.mark.slow
def test_extract_all_writes_a_pairs_file_that_reads_back_to_the_same_table(tmp_path):
    corpus = write_slice(tmp_path / "small.jsonl", 120)
    cfg = small_config(tmp_path, corpus, budget=0.15)
    t1 = extract_all(cfg, tmp_path / "t1", progress=False, say=lambda m: None)
    pf = t1 / "pairs.jsonl"
    assert pf.is_file()
    recs = list(read_jsonl(pf))
    assert recs and all(p["extractor"] == "heuristic" for r in recs for p in r["pairs"])
    t2 = extract_all(cfg.replace(**{"extract.name": "file", "extract.file.path": str(pf)}), tmp_path / "t2",
                     progress=False, say=lambda m: None)
    a, b = ExtractionTable.load(t1), ExtractionTable.load(t2)
    assert a.doc_ids == b.doc_ids and a.status == b.status
    assert [a.pairs_of(i) for i in range(len(a))] == [b.pairs_of(i) for i in range(len(b))]
    assert (a.vectors == b.vectors).all()
    qa = lambda f: [(r["doc_id"], [(p["question"], p["answer"]) for p in r["pairs"]]) for r in read_jsonl(f)]
    assert qa(t2 / "pairs.jsonl") == qa(pf)
