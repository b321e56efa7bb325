"""The ONNX Runtime embedder (``embed.backend: onnx`` or ``onnx-int8``) of a sentence-transformers model.

On first use the model is exported offline from its torch weights (``torch.onnx.export`` of the eager
attention, whose graph ONNX Runtime's transformer optimizer fuses into its Attention, SkipLayerNormalization
and BiasGelu kernels) into ``<cache root>/models/onnx-<hash of the source model's files>``; for
``onnx-int8`` that export is then quantized dynamically by ONNX Runtime's own quantizer
(``onnxruntime.quantization.quantize_dynamic``: int8 weights per output channel, uint8 activations
quantized at run time, every MatMul and Attention) into
``onnx-int8-<isa>-<hash>``, where ``<isa>`` is ``vnni`` on a CPU with VNNI (AVX-512 VNNI, AVX-VNNI or AMX:
full 8-bit range) and ``avx2`` elsewhere (7-bit weights, ``reduce_range``, so that the u8 x s8 products of
AVX2/AVX-512 without VNNI cannot saturate). Each folder is written whole to a temporary name and renamed
into place, and holds the tokenizer and ``equal-onnx.json`` (pooling, normalisation, token limit, recipe),
so it stands alone. A changed source model has another hash, hence a new export: never a stale one.

The embedder tokenizes as sentence-transformers does (the model's own tokenizer, truncation at
``max_seq_length``, texts of one call sorted by length into batches), runs the graph on the CPU with
``torch.get_num_threads()`` threads, mean-pools (or takes CLS) over the attention mask and L2-normalises.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .base import EmbedderError, model_digest, offline, quiet_load, register

META = "equal-onnx.json"
RECIPE = 2  # bump when the export or the quantization changes: older folders are then made again
_MODEL = "model.onnx"
log = logging.getLogger("equal.embed")


def cpu_isa() -> str:
    """``vnni`` when the CPU has 8-bit dot products (AVX-512 VNNI, AVX-VNNI, AMX, or an ARM CPU), else
    ``avx2``: what the int8 quantization is made for."""
    import platform

    if platform.machine().lower() in ("aarch64", "arm64"):
        return "vnni"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    return "vnni" if {"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags) else "avx2"


def _write_whole(out: Path, fill: Callable[[Path], None]) -> Path:
    """Run ``fill(tmp)`` on a fresh temporary folder beside ``out``, then rename it to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        fill(tmp)
        shutil.rmtree(out, ignore_errors=True)  # an unfinished or outdated folder of the same name
        os.replace(tmp, out)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not is_onnx_model(out):  # another process put a whole one there first: keep it
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def is_onnx_model(path: str | Path) -> bool:
    """Whether ``path`` is a whole folder made by :func:`export_onnx` or :func:`quantize_onnx` (this recipe)."""
    path = Path(path)
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return meta.get("recipe") == RECIPE and (path / _MODEL).is_file()


def _pooling(st) -> tuple[str, bool]:
    """(``mean`` or ``cls``, normalised?) of a sentence-transformers model: Transformer, Pooling (+ Normalize)."""
    mods = list(st)
    names = [type(m).__name__ for m in mods]
    if names[:2] != ["Transformer", "Pooling"] or any(n != "Normalize" for n in names[2:]):
        raise EmbedderError(f"the onnx backend exports Transformer + Pooling (+ Normalize) models, not {names}")
    pool = mods[1]
    mode = getattr(pool, "pooling_mode", None)
    if mode is None:  # older sentence-transformers: one flag per mode
        mode = "mean" if getattr(pool, "pooling_mode_mean_tokens", False) else (
            "cls" if getattr(pool, "pooling_mode_cls_token", False) else "other")
    mode = str(mode).lower()
    if mode not in ("mean", "cls"):
        raise EmbedderError(f"the onnx backend handles mean or cls pooling, not {mode!r}")
    return mode, len(mods) > 2


def export_onnx(src: str | Path, out: str | Path) -> Path:
    """Export the sentence-transformers model at ``src`` (a local folder; offline) to an fp32 ONNX graph of
    its transformer (``last_hidden_state`` from the tokenizer's inputs, batch and length dynamic) in ``out``,
    with its tokenizer and ``equal-onnx.json``."""
    import inspect

    import torch

    from .st import load_sentence_transformer

    offline()
    st = load_sentence_transformer(str(src), "cpu")
    pooling, normalized = _pooling(st)
    module = st[0]
    model, tokenizer = module.auto_model.eval(), module.tokenizer
    try:  # the eager attention exports to the plain pattern that the optimizer fuses; sdpa's does not fuse
        model.set_attn_implementation("eager")
    except (AttributeError, ValueError):
        model.config._attn_implementation = "eager"
    params = set(inspect.signature(model.forward).parameters)
    dummy = tokenizer(["an example to trace", "a second, longer example to trace the graph with"], padding=True,
                      return_tensors="pt")
    inputs = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in dummy and k in params]

    class Hidden(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return self.inner(**dict(zip(inputs, args)), return_dict=True).last_hidden_state

    meta = {"recipe": RECIPE, "source": str(src), "source_digest": model_digest(src), "quantized": False,
            "inputs": inputs, "pooling": pooling, "normalize": normalized, "dim": int(model.config.hidden_size),
            "max_seq_length": int(st.max_seq_length), "torch": torch.__version__}

    def fill(tmp: Path) -> None:
        raw = tmp / "raw.onnx"
        with warnings.catch_warnings(), quiet_load(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(Hidden(model), tuple(dummy[k] for k in inputs), str(raw), dynamo=False,
                              input_names=inputs, output_names=["last_hidden_state"], opset_version=17,
                              dynamic_axes={k: {0: "batch", 1: "tokens"} for k in [*inputs, "last_hidden_state"]})
        _optimize(raw, tmp / _MODEL, model.config)
        raw.unlink()
        tokenizer.save_pretrained(str(tmp))
        (tmp / META).write_text(json.dumps(meta, indent=1), encoding="utf-8")

    return _write_whole(Path(out), fill)


def _optimize(raw: Path, out: Path, config) -> None:
    """ONNX Runtime's transformer optimizer on the exported graph (fused attention, layer norms and GELU)."""
    from onnxruntime.transformers import optimizer

    kind = config.model_type if config.model_type in ("bert", "bart", "gpt2", "t5") else "bert"
    level = logging.getLogger("onnxruntime.transformers").level
    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    try:
        opt = optimizer.optimize_model(str(raw), model_type=kind, num_heads=int(config.num_attention_heads),
                                       hidden_size=int(config.hidden_size))
    finally:
        logging.getLogger("onnxruntime.transformers").setLevel(level)
    log.debug("onnx export fused %s", opt.get_fused_operator_statistics())
    opt.save_model_to_file(str(out))


def quantize_onnx(fp32: str | Path, out: str | Path, isa: str | None = None) -> Path:
    """Quantize the fp32 export at ``fp32`` dynamically (ONNX Runtime's ``quantize_dynamic``) into ``out``:
    int8 weights per channel, activations quantized per batch at run time, for the CPU's ``isa``."""
    import onnx
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    isa = isa or cpu_isa()
    fp32 = Path(fp32)
    meta = json.loads((fp32 / META).read_text(encoding="utf-8"))
    meta.update(quantized=True, isa=isa, onnxruntime=onnxruntime.__version__,
                quantization={"weight_type": "QInt8", "per_channel": True, "op_types": ["MatMul", "Attention"],
                              "reduce_range": isa != "vnni"})

    def fill(tmp: Path) -> None:
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # the quantizer's advice to pre-process goes to the root logger
        try:
            # DefaultTensorType: the fused ops (com.microsoft domain) escape ONNX's shape inference
            quantize_dynamic(str(fp32 / _MODEL), str(tmp / _MODEL), weight_type=QuantType.QInt8, per_channel=True,
                             reduce_range=isa != "vnni", op_types_to_quantize=["MatMul", "Attention"],
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        finally:
            root.setLevel(level)
        for f in fp32.iterdir():
            if f.is_file() and f.name not in (_MODEL, META):
                shutil.copy2(f, tmp / f.name)
        (tmp / META).write_text(json.dumps(meta, indent=1), encoding="utf-8")

    return _write_whole(Path(out), fill)


def onnx_model_path(src: str | Path, cache_root: str | Path | None = None, int8: bool = False,
                    say: Callable[[str], None] | None = None) -> Path:
    """The ONNX export (``int8``: quantized) of the sentence-transformers folder ``src`` in
    ``<cache root>/models``, made there first if it is not there yet (about 15 s on two CPU cores), or copied
    from the default cache root's ``models`` when a whole one of the same name is there. Named by a hash of
    ``src``'s files, so a changed model is exported anew, never served stale."""
    from ..extract.cache import default_cache_dir

    default = default_cache_dir() / "models"
    if cache_root is None:
        cache_root = default.parent
    if not Path(src).is_dir():
        raise EmbedderError(f"the onnx backend exports a local model folder; {src} is not one")
    digest = model_digest(src)
    models = Path(cache_root) / "models"
    isa = cpu_isa()
    out = models / (f"onnx-int8-{isa}-{digest}" if int8 else f"onnx-{digest}")
    if is_onnx_model(out):
        return out
    if models != default and is_onnx_model(default / out.name):  # another cache root's whole copy: no new export
        return _write_whole(out, lambda tmp: shutil.copytree(default / out.name, tmp, dirs_exist_ok=True))
    fp32 = models / f"onnx-{digest}"
    if not is_onnx_model(fp32):
        if say is not None:
            say(f"exporting the embedding model {src} to ONNX in {fp32} (once)")
        export_onnx(src, fp32)
    if not int8:
        return fp32
    if say is not None:
        say(f"quantizing the ONNX embedding model to int8 ({isa}) in {out} (once)")
    return quantize_onnx(fp32, out, isa)


@register
class OnnxEmbedder:
    """A sentence-transformers model exported to ONNX (:func:`onnx_model_path`), run by ONNX Runtime on the
    CPU: L2-normalised float32 vectors. ``path`` is the export's folder."""

    kind = "onnx"

    def __init__(self, path: str | Path, batch_size: int = 64, max_seq_length: int | None = None,
                 name: str | None = None) -> None:
        offline()
        import onnxruntime as ort
        import torch
        from transformers import AutoTokenizer

        self.path = str(path)
        self.name = name or self.path
        if not is_onnx_model(self.path):
            raise EmbedderError(f"{self.path} is not an ONNX export of this version of equal")
        self.meta = json.loads((Path(self.path) / META).read_text(encoding="utf-8"))
        self.backend = "onnx-int8" if self.meta["quantized"] else "onnx"
        self.source = str(self.meta["source"])
        try:
            with quiet_load():
                self.tokenizer = AutoTokenizer.from_pretrained(self.path)
            so = ort.SessionOptions()
            so.intra_op_num_threads = max(1, torch.get_num_threads())  # what a worker or a test set
            so.inter_op_num_threads = 1
            self.session = ort.InferenceSession(str(Path(self.path) / _MODEL), so,
                                                providers=["CPUExecutionProvider"])
        except Exception as e:
            raise EmbedderError(f"cannot load ONNX model '{path}': {type(e).__name__}: {e}"[:500]) from None
        self.inputs = list(self.meta["inputs"])
        self.max_seq_length = int(max_seq_length or self.meta["max_seq_length"])
        self.batch_size = int(batch_size)
        self.dim = int(self.meta["dim"])
        self.device = "cpu"

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "name": self.name, "batch_size": self.batch_size,
                "max_seq_length": self.max_seq_length}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "OnnxEmbedder":
        return cls(spec["path"], spec["batch_size"], spec["max_seq_length"], name=spec["name"])

    def fingerprint(self) -> str:
        """The export's files (its graph and weights, fp32 or int8) and the token limit."""
        h = hashlib.sha1(f"{self.backend}|{model_digest(self.path)}|{self.max_seq_length}".encode())
        return h.hexdigest()[:16]

    def _batch(self, texts: list[str]) -> np.ndarray:
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_seq_length,
                             return_tensors="np")
        hidden = self.session.run(None, {k: np.asarray(enc[k], dtype=np.int64) for k in self.inputs})[0]
        if self.meta["pooling"] == "cls":
            vecs = hidden[:, 0]
        else:
            mask = np.asarray(enc["attention_mask"], dtype=np.float32)[..., None]
            vecs = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        vecs = np.asarray(vecs, dtype=np.float32)
        if self.meta["normalize"]:
            vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        return vecs

    def _encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        texts = list(texts)
        order = np.argsort([-len(t) for t in texts], kind="stable")  # as sentence-transformers batches
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for s in range(0, len(texts), batch_size):
            rows = order[s: s + batch_size]
            out[rows] = self._batch([texts[int(i)] for i in rows])
        return out

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self.batch_size)

    def encode_each(self, texts: Sequence[str]) -> np.ndarray:
        """Every text in a forward pass of its own (no padding): a vector never depends on the others."""
        return self._encode(texts, 1)
