"""embed.backend onnx / onnx-int8: the shipped MiniLM exported offline to ONNX on first use (and quantized
to int8), kept in <cache>/models under the hash of the source model's files, reused from there, exported
anew when the source changes; int8 vectors close to fp32 ones; a resume across backends refused; model
loads without transformers' load report."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import equal.embed.onnx as onnx_mod
from conftest import equal_cli, read_corpus, run_args, write_slice
from equal.embed import (DEFAULT_MODEL, Embedder, OnnxEmbedder, from_spec, make_embedder, model_digest,
                         resolve_model)
from equal.executors import embedder_spec, load_embedder


class Counted:
    """The real export (or quantization) function, with its calls counted."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, src, out, *args, **kw):
        self.calls.append((str(src), Path(out)))
        return self.fn(src, out, *args, **kw)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A cache root holding the int8 (and fp32) export of the shipped MiniLM, made by the real tools, with
    the export and quantization calls counted; yields (cache root, export counter, quantize counter)."""
    mp = pytest.MonkeyPatch()
    export, quantize = Counted(onnx_mod.export_onnx), Counted(onnx_mod.quantize_onnx)
    mp.setattr(onnx_mod, "export_onnx", export)
    mp.setattr(onnx_mod, "quantize_onnx", quantize)
    # an empty default cache root, so the export is made here even when the session's cache holds one
    mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("empty-default-cache")))
    root = tmp_path_factory.mktemp("xdg") / "equal"
    said = []
    e = make_embedder(backend="onnx-int8", cache_root=root, say=said.append, device="cpu")
    assert isinstance(e, OnnxEmbedder) and e.backend == "onnx-int8" and e.dim == 384
    assert any("exporting" in s for s in said) and any("int8" in s for s in said)
    yield root, export, quantize
    mp.undo()


def test_export_is_kept_under_the_source_hash_and_reused(exported):
    root, export, quantize = exported
    digest = model_digest(resolve_model(DEFAULT_MODEL))
    fp32 = root / "models" / f"onnx-{digest}"
    int8 = root / "models" / f"onnx-int8-{onnx_mod.cpu_isa()}-{digest}"
    assert [c[1] for c in export.calls] == [fp32] and [c[1] for c in quantize.calls] == [int8]
    mtimes = {p: (p / "model.onnx").stat().st_mtime_ns for p in (fp32, int8)}
    assert (int8 / "model.onnx").stat().st_size < (fp32 / "model.onnx").stat().st_size  # int8 weights
    first = make_embedder(backend="onnx-int8", cache_root=root, device="cpu")
    again = make_embedder(backend="onnx", cache_root=root, device="cpu")  # the fp32 export is kept too
    assert len(export.calls) == 1 and len(quantize.calls) == 1  # a second load exports nothing
    assert {p: (p / "model.onnx").stat().st_mtime_ns for p in mtimes} == mtimes
    assert first.path == str(int8) and again.path == str(fp32)
    fps = {first.fingerprint(), again.fingerprint(), Embedder(max_seq_length=256, device="cpu").fingerprint()}
    assert len(fps) == 3  # int8, onnx fp32 and torch vectors never share a cache entry


def test_another_cache_root_copies_the_default_roots_export_instead_of_exporting(exported, tmp_path, monkeypatch):
    root, export, quantize = exported
    monkeypatch.setenv("XDG_CACHE_HOME", str(root.parent))  # root is now the default cache root
    other = tmp_path / "run-cache"
    said = []
    e = make_embedder(backend="onnx-int8", cache_root=other, say=said.append, device="cpu")
    assert len(export.calls) == 1 and len(quantize.calls) == 1 and not said  # copied, not exported
    direct = make_embedder(backend="onnx-int8", cache_root=root, device="cpu")
    assert Path(e.path).parent == other / "models" and Path(e.path).name == Path(direct.path).name
    assert e.fingerprint() == direct.fingerprint()
    digest = model_digest(resolve_model(DEFAULT_MODEL))
    assert not (other / "models" / f"onnx-{digest}").exists()  # only what was asked for is copied


def test_int8_vectors_close_to_fp32_and_spec_round_trip(exported):
    root, _, _ = exported
    texts = [r["text"] for r in read_corpus(24)] + ["", "a b", "What is 7 times 6?"]
    torch_vecs = Embedder(max_seq_length=256, device="cpu").encode(texts)
    fp32 = make_embedder(backend="onnx", cache_root=root, max_seq_length=256, device="cpu")
    int8 = make_embedder(backend="onnx-int8", cache_root=root, max_seq_length=256, device="cpu")
    cos_fp32 = (fp32.encode(texts) * torch_vecs).sum(1)
    v8 = int8.encode(texts)
    cos_int8 = (v8 * torch_vecs).sum(1)
    assert v8.dtype == np.float32 and np.allclose(np.linalg.norm(v8, axis=1), 1, atol=1e-5)
    assert cos_fp32.min() > 0.9999  # the export computes what torch computes
    assert cos_int8.mean() >= 0.99 and cos_int8.min() > 0.95, cos_int8
    assert not np.array_equal(v8, torch_vecs)
    # a vector depends on its encode call only: the same texts give the same bits; encode_each is per text
    assert np.array_equal(int8.encode(texts), v8)
    each = int8.encode_each(texts[:3])
    assert np.array_equal(each, np.concatenate([int8.encode_each([t]) for t in texts[:3]]))
    spec = embedder_spec(int8)
    assert spec["kind"] == "onnx" and load_embedder(spec).fingerprint() == int8.fingerprint()
    assert np.array_equal(from_spec(spec).encode(texts[:4]), int8.encode(texts[:4]))


def test_changed_source_model_is_exported_anew(exported, tmp_path):
    from safetensors.numpy import load_file, save_file

    root, export, quantize = exported
    src = Path(resolve_model(DEFAULT_MODEL))
    copy = tmp_path / "minilm"
    shutil.copytree(src, copy)
    before = make_embedder(str(copy), backend="onnx-int8", cache_root=root, device="cpu")
    assert len(export.calls) == 1  # an identical copy: the same files, the same export
    weights = load_file(str(copy / "model.safetensors"))
    name = next(k for k in weights if k.endswith("encoder.layer.0.output.dense.weight"))
    weights[name] = (weights[name] * 1.5).astype(weights[name].dtype)
    save_file(weights, str(copy / "model.safetensors"), metadata={"format": "pt"})
    after = make_embedder(str(copy), backend="onnx-int8", cache_root=root, device="cpu")
    assert len(export.calls) == 2 and len(quantize.calls) == 2 and export.calls[-1][0] == str(copy)
    assert after.path != before.path and after.fingerprint() != before.fingerprint()
    texts = ["the cat sat on a mat", "integrate x squared from 0 to 1"]
    assert not np.allclose(after.encode(texts), before.encode(texts), atol=1e-3)


def test_resume_across_backends_is_refused_naming_the_field(tmp_path):
    corpus = write_slice(tmp_path / "c.jsonl", 80)
    out = tmp_path / "run"
    r = equal_cli(*run_args(corpus, out, "--set", "score.prior_sample=50"))
    assert r.returncode == 0, r.stderr[-2000:]
    r = equal_cli(*run_args(corpus, out, "--set", "score.prior_sample=50", "--set", "embed.backend=torch"))
    assert r.returncode == 2 and "embed.backend" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]


def test_unknown_backend_is_a_user_error():
    from equal.embed import EmbedderError

    with pytest.raises(EmbedderError, match="embed.backend"):
        make_embedder(backend="tensorrt")


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_model_load_prints_no_load_report_unless_debug(level):
    code = ("import logging; logging.getLogger('equal').setLevel(logging.%s)\n"
            "from equal.embed import Embedder; Embedder(device='cpu')" % level)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    shown = "UNEXPECTED" in r.stderr and "LOAD REPORT" in r.stderr
    assert shown == (level == "DEBUG"), r.stderr[-2000:]
