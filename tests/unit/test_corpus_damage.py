"""Damage that used to pass unrecorded: compressed shards cut off or corrupt (named in the skip counts that
summary.json copies; an error with corpus_options.strict), and files in UTF-16/32 (one clear error)."""

import gzip
import json
import logging

import pytest
import zstandard

from equal.config import CorpusConfig
from equal.corpus import Corpus, CorpusError


def _recs(n, start=0):
    return [{"id": f"d{i}", "text": f"document {i} " + "words " * 40} for i in range(start, start + n)]


def _body(recs):
    return b"".join(json.dumps(r).encode() + b"\n" for r in recs)


def _ids(c):
    return [d.id for d in c.get(range(len(c)))]


def _folder(tmp_path, broken_name, broken_bytes, n_good=10):
    d = tmp_path / "shards"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / broken_name).write_bytes(broken_bytes)
    (d / "z-good.jsonl").write_bytes(_body(_recs(n_good, start=100000)))
    return d


@pytest.mark.parametrize("kind", ["gz", "zst"])
def test_a_shard_cut_off_mid_stream_is_named_in_the_skip_counts(tmp_path, kind, caplog):
    recs = _recs(3000)  # several zstd blocks (128 KiB each): the blocks before the cut can be read
    packed = gzip.compress(_body(recs)) if kind == "gz" else zstandard.ZstdCompressor().compress(_body(recs))
    folder = _folder(tmp_path, f"a.jsonl.{kind}", packed[: len(packed) // 2])
    with caplog.at_level(logging.WARNING):
        c = Corpus(folder, CorpusConfig())
    assert c.skipped[f"truncated_shard:sub/a.jsonl.{kind}"] == 1, dict(c.skipped)
    assert c.damaged_shards() == {f"sub/a.jsonl.{kind}": "truncated"}
    ids = _ids(c)
    kept = len(ids) - 10
    assert 500 < kept < 3000 and ids[:kept] == [r["id"] for r in recs[:kept]]
    assert ids[kept:] == [f"d{i}" for i in range(100000, 100010)]
    assert any("truncated" in r.getMessage() for r in caplog.records)
    # with corpus_options.strict the same corpus is a one-line error naming the shard
    with pytest.raises(CorpusError, match=rf"corpus shard sub/a\.jsonl\.{kind} .* is cut off mid-stream.*strict"):
        Corpus(folder, CorpusConfig(strict=True))


def test_a_corrupt_gzip_shard_is_named_as_unreadable(tmp_path):
    packed = bytearray(gzip.compress(_body(_recs(300))))
    packed[-8] ^= 0xFF  # the CRC
    folder = _folder(tmp_path, "a.jsonl.gz", bytes(packed))
    c = Corpus(folder)
    assert c.skipped["unreadable_shard:sub/a.jsonl.gz"] == 1, dict(c.skipped)
    with pytest.raises(CorpusError, match="cannot be read to its end"):
        Corpus(folder, CorpusConfig(strict=True))
    (folder / "sub" / "a.jsonl.gz").write_bytes(b"not gzip at all\n")
    assert Corpus(folder).damaged_shards() == {"sub/a.jsonl.gz": "unreadable"}


def test_a_single_truncated_zst_file_and_a_whole_multi_frame_one(tmp_path):
    recs = _recs(200)
    one = tmp_path / "c.jsonl.zst"
    z = zstandard.ZstdCompressor().compress(_body(recs))
    one.write_bytes(z[:-5])  # one block: nothing readable is left, and the error says why
    with pytest.raises(CorpusError, match="no usable documents .*truncated_shard:c.jsonl.zst=1"):
        Corpus(one)
    big = _recs(3000)  # several blocks: the ones before the cut are kept
    zb = zstandard.ZstdCompressor().compress(_body(big))
    one.write_bytes(zb[: len(zb) // 2])
    c = Corpus(one)
    assert c.damaged_shards() == {"c.jsonl.zst": "truncated"} and 0 < len(c) < 3000
    assert _ids(c) == [r["id"] for r in big[: len(c)]]
    # several frames (as pzstd writes them): all of them are read, nothing is damaged
    multi = tmp_path / "m.jsonl.zst"
    multi.write_bytes(b"".join(zstandard.ZstdCompressor().compress(_body(recs[i: i + 50])) for i in range(0, 200, 50)))
    c = Corpus(multi)
    assert _ids(c) == [r["id"] for r in recs] and c.damaged_shards() == {}
    z_whole = tmp_path / "w.jsonl.zst"
    z_whole.write_bytes(z)
    assert len(Corpus(z_whole)) == 200 and not Corpus(z_whole).skipped


def test_strict_also_holds_when_the_index_comes_from_the_cache(tmp_path):
    packed = gzip.compress(_body(_recs(300)))
    folder = _folder(tmp_path, "a.jsonl.gz", packed[: len(packed) // 3])
    index = tmp_path / "index"
    index.mkdir()
    Corpus(folder, CorpusConfig(), index_dir=index)
    assert (index / "corpus_index.json").is_file()
    assert "truncated_shard:sub/a.jsonl.gz" in json.loads((index / "corpus_index.json").read_text())["skipped"]
    with pytest.raises(CorpusError, match="strict"):
        Corpus(folder, CorpusConfig(strict=True), index_dir=index)


def test_a_utf8_byte_order_mark_is_stripped(tmp_path):
    p = tmp_path / "bom.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + _body(_recs(5)))
    c = Corpus(p)
    assert _ids(c) == [f"d{i}" for i in range(5)] and not c.skipped


@pytest.mark.parametrize("encoding,bom,name", [
    ("utf-16-le", b"\xff\xfe", "UTF-16 (little-endian)"), ("utf-16-be", b"\xfe\xff", "UTF-16 (big-endian)"),
    ("utf-32-le", b"\xff\xfe\x00\x00", "UTF-32 (little-endian)"), ("utf-32-be", b"\x00\x00\xfe\xff", "UTF-32 (big-endian)"),
    ("utf-16-le", b"", "UTF-16 (little-endian)"), ("utf-16-be", b"", "UTF-16 (big-endian)")])
def test_utf16_and_utf32_files_are_one_clear_error(tmp_path, encoding, bom, name):
    text = "".join(json.dumps(r) + "\n" for r in _recs(5))
    p = tmp_path / "wide.jsonl"
    p.write_bytes(bom + text.encode(encoding))
    with pytest.raises(CorpusError) as err:
        Corpus(p)
    msg = str(err.value)
    family = name.split()[0]
    assert "\n" not in msg and name in msg and f"iconv -f {family} -t UTF-8" in msg, msg
    assert ("no byte-order mark" in msg) == (not bom)


def test_a_utf16_shard_is_named(tmp_path):
    d = tmp_path / "shards"
    d.mkdir()
    (d / "a.jsonl").write_bytes(_body(_recs(5)))
    (d / "b.jsonl.gz").write_bytes(gzip.compress(b"\xff\xfe" + _body(_recs(5, 10)).decode().encode("utf-16-le")))
    with pytest.raises(CorpusError, match=r"b\.jsonl\.gz is UTF-16 \(little-endian\).*gzip -dc .*iconv -f UTF-16"):
        Corpus(d)


@pytest.mark.slow
@pytest.mark.needs_data
def test_a_run_names_the_truncated_shard_in_summary_and_report_and_strict_stops_it(tmp_path):
    from conftest import CORPUS, REF_MATH, equal_cli, run_args

    lines = CORPUS.read_bytes().splitlines(keepends=True)[:200]
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "a.jsonl").write_bytes(b"".join(lines[:30]))
    packed = gzip.compress(b"".join(lines[30:]))
    (shards / "b.jsonl.gz").write_bytes(packed[: len(packed) // 2])
    fast = ["--set", "score.prior_sample=50", "--set", "score.reference_sample=50"]
    done = equal_cli(*run_args(shards, tmp_path / "run", *fast, reference=REF_MATH, budget=10))
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["skipped"].get("truncated_shard:b.jsonl.gz") == 1, summary["skipped"]
    assert "truncated_shard:b.jsonl.gz" in (tmp_path / "run" / "report.md").read_text()
    strict = equal_cli(*run_args(shards, tmp_path / "strict", "--set", "corpus_options.strict=true", *fast,
                                 reference=REF_MATH, budget=10))
    errors = [line for line in strict.stderr.splitlines() if line.startswith("equal: error")]
    assert strict.returncode == 2 and len(errors) == 1 and "b.jsonl.gz" in errors[0] and "strict" in errors[0], \
        strict.stderr[-2000:]
    assert "Traceback" not in strict.stderr


def test_a_junk_first_line_that_starts_like_a_byte_order_mark_is_only_junk(tmp_path):
    p = tmp_path / "junk.jsonl"
    p.write_bytes(b"\xff\xfe\n" + _body(_recs(3)))  # FF FE, but what follows is no UTF-16 JSON
    c = Corpus(p)
    assert _ids(c) == ["d0", "d1", "d2"] and c.skipped["malformed_json"] == 1
