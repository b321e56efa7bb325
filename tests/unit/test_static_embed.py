"""The static (model2vec) embedder: distilled offline from the shipped MiniLM, keyed by its files, and a
whole run with it (sharded corpus, adapter alignment, kill and resume)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import REF_MATH, equal_cli, require_data, run_args
from equal.embed import (DEFAULT_MODEL, StaticEmbedder, distill_static, embed_to_memmap, make_embedder,
                         model_digest, resolve_model, static_model_path)

# a small vocabulary (one- and two-letter words and ## pieces) so that the real distillation takes seconds
SMALL_VOCAB = r"^(?!(?:[a-z]{1,2}|##[a-z]{1,2}|[0-9]|\[UNK\]|\[PAD\])$)"


@pytest.fixture(scope="session")
def small_static(tmp_path_factory) -> Path:
    """A model2vec model distilled from the shipped MiniLM (offline) over a small vocabulary."""
    return distill_static(resolve_model(DEFAULT_MODEL), tmp_path_factory.mktemp("m2v") / "small", pca_dims=32,
                          token_remove_pattern=SMALL_VOCAB)


def test_static_vectors_are_unit_float32_and_independent_of_grouping(small_static):
    e = make_embedder(str(small_static))
    assert isinstance(e, StaticEmbedder) and e.dim == 32
    texts = ["the cat sat on a mat", "an ox", "", "is it 42 or 7 to go", "no"]
    together = e.encode(texts)
    alone = np.concatenate([e.encode([t]) for t in texts])
    assert together.dtype == np.float32 and np.array_equal(together, alone)
    norms = np.linalg.norm(together, axis=1)
    assert np.allclose(norms[[0, 1, 3, 4]], 1, atol=1e-6) and norms[2] == 0  # an empty text has no tokens
    assert not np.allclose(together[0], together[3])


def test_fingerprint_follows_the_files_not_the_path(small_static, tmp_path):
    e = StaticEmbedder(small_static)
    copy = tmp_path / "copy"
    shutil.copytree(small_static, copy)
    assert StaticEmbedder(copy).fingerprint() == e.fingerprint()  # moved: the shared cache still applies
    cfg = json.loads((copy / "config.json").read_text())
    cfg["normalize"] = not cfg.get("normalize", True)  # a changed model in the same folder
    (copy / "config.json").write_text(json.dumps(cfg))
    assert model_digest(copy) != model_digest(small_static)
    assert StaticEmbedder(copy).fingerprint() != e.fingerprint()
    assert StaticEmbedder(small_static, max_seq_length=16).fingerprint() != e.fingerprint()


def test_static_is_distilled_once_into_the_cache(small_static, tmp_path, monkeypatch):
    import equal.embed.static as embed_mod

    calls = []

    def fake_distill(base, out, **kw):  # the real distillation made small_static; here only where and when
        calls.append((str(base), Path(out)))
        shutil.copytree(small_static, out)
        return out

    monkeypatch.setattr(embed_mod, "distill_static", fake_distill)
    said = []
    e = make_embedder("static", cache_root=tmp_path, say=said.append)
    want = tmp_path / "models" / f"static-{model_digest(resolve_model(DEFAULT_MODEL))}"
    assert calls == [(resolve_model(DEFAULT_MODEL), want)] and e.path == str(want) and e.name == "static"
    assert said and "distilling" in said[0]
    again = make_embedder("static", cache_root=tmp_path)
    assert len(calls) == 1 and again.fingerprint() == e.fingerprint()
    assert static_model_path(tmp_path) == want


def test_encode_blocks_fixed_by_position_across_chunks_resumes_and_read_ahead(tmp_path):
    """A block-dependent encoder (each vector holds its block's first index and size): the file is the
    same whatever the chunk size, and after a resume from a partial file."""
    texts = [f"t{i}" for i in range(103)]
    calls = []

    def encode(batch):
        calls.append(len(batch))
        first = int(batch[0][1:])
        return np.array([[first, len(batch), int(t[1:])] for t in batch], dtype=np.float32)

    def run(path, chunk):
        return np.asarray(embed_to_memmap(path, len(texts), 3, lambda a, b: texts[a:b], encode, chunk=chunk,
                                          progress=False, key={"k": 1}, block=16))

    a = run(tmp_path / "a.npy", 16)
    b = run(tmp_path / "b.npy", 48)
    assert np.array_equal(a, b)
    assert a[:, 2].tolist() == list(range(103))  # read ahead kept every text in its place
    assert a[:, 0].tolist() == [i - i % 16 for i in range(103)] and a[-1, 1] == 103 % 16
    # a partial file (two chunks of 48 done) resumes to the same bits
    prog = tmp_path / "b.npy.progress.json"
    state = json.loads(prog.read_text())
    state["rows"] = 48
    prog.write_text(json.dumps(state))
    calls.clear()
    assert np.array_equal(run(tmp_path / "b.npy", 48), a) and sum(calls) == 103 - 48


# ---------------------------------------------------------------- a whole run with it
def _shard(src: Path, folder: Path) -> Path:
    """The lines of ``src`` in three shards: plain, gzip, plain."""
    import gzip

    lines = src.read_bytes().splitlines(keepends=True)
    folder.mkdir()
    (folder / "part-0.jsonl").write_bytes(b"".join(lines[:150]))
    (folder / "part-1.jsonl.gz").write_bytes(gzip.compress(b"".join(lines[150:260])))
    (folder / "part-2.jsonl").write_bytes(b"".join(lines[260:]))
    return folder


@pytest.fixture(scope="module")
def static_runs(slice400, small_static, tmp_path_factory):
    """Runs with the small static model: on the single-file slice, and on the same lines in shards killed
    after the second embedding chunk and resumed."""
    require_data()
    root = tmp_path_factory.mktemp("static-runs")
    shards = _shard(Path(slice400), root / "shards")
    extra = ["--embedder", str(small_static), "--set", "embed.cache=false", "--set", "embed.sort_window=128"]
    r = equal_cli(*run_args(slice400, root / "single", *extra))
    assert r.returncode == 0, r.stderr[-3000:]
    killed = equal_cli(*run_args(shards, root / "sharded", *extra), env={"EQUAL_TEST_KILL_AT": "embed_chunk:2"})
    assert killed.returncode != 0 and not (root / "sharded" / "summary.json").exists()
    resumed = equal_cli(*run_args(shards, root / "sharded", *extra))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return root / "single", root / "sharded"


def test_static_run_aligns_and_shards_and_a_resume_change_nothing(static_runs):
    from equal.run import work_log

    single, shards = static_runs
    for name in ("dataset.jsonl", "rounds.jsonl", "extracted.jsonl"):
        assert (single / name).read_bytes() == (shards / name).read_bytes(), name
    s = json.loads((shards / "summary.json").read_text())
    assert s["config"]["embed"]["model"].endswith("small") and s["pairs"] > 0
    assert s["align"].get("steps", 0) > 0 and "loss_after" in s["align"]  # the adapter was trained
    vecs = np.load(shards / "state" / "doc_vectors.npy")
    assert vecs.shape == (400, 32) and np.array_equal(vecs, np.load(single / "state" / "doc_vectors.npy"))
    # killed after two chunks of 128 (chunk_docs 64 rounded up to the window), the resume embedded the rest
    procs = work_log(shards)
    assert [p["embedded"] for p in procs] == [256, 400 - 256] and procs[1]["committed"]["embedded"] == 256
    assert json.loads((shards / "state" / "doc_vectors.npy.progress.json").read_text())["block"] == 128


def test_full_alignment_with_a_static_model_is_refused(small_static, slice400, tmp_path):
    from equal import Config
    from equal.run import RunError, run

    cfg = Config(corpus=str(slice400), reference=str(REF_MATH), out=str(tmp_path / "run")).replace(
        **{"embed.model": str(small_static), "align.mode": "full", "align.warmup_fraction": 0.5})
    with pytest.raises(RunError, match="static.*adapter"):
        run(cfg, progress=False)
    assert not (tmp_path / "run" / "state" / "doc_vectors.npy").exists()
