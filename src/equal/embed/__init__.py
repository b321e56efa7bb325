"""Embedding: the embedders (one module per backend, registered in :mod:`equal.embed.base`) and the chunked,
resumable memmap writer (:mod:`equal.embed.store`).

:func:`make_embedder` picks one from ``embed.model`` and ``embed.backend``:

* a sentence-transformers model name or folder, run by torch (:class:`Embedder`, ``backend: torch``; the
  default, the shipped MiniLM; fp16 on a GPU);
* the same model exported to ONNX on first use, offline, and run by ONNX Runtime on the CPU, in fp32
  (``backend: onnx``) or quantized to int8 (``backend: onnx-int8``) (:class:`OnnxEmbedder`; the export is
  kept in ``<cache root>/models/``, :func:`onnx_model_path`). On a GPU the torch fp16 path is used whatever
  the backend says;
* ``static``: a model2vec static model distilled from the shipped MiniLM on first use, offline, and kept
  in ``<cache root>/models/`` (:func:`static_model_path`); or the folder of any model2vec model
  (:class:`StaticEmbedder`). A static model looks every token up in a table and averages: no forward
  pass, so it embeds a few thousand documents a second on a CPU, at some cost in quality.

An embedder's ``fingerprint()`` hashes its model's files (:func:`model_digest`: for ONNX, the export's, so
fp32 and int8 differ), never just its path, so a model changed in place is never reused stale from the
shared embedding cache. ``spec()`` and :func:`from_spec` carry an embedder to another process.

Adding an embedder: a class with ``kind``, ``spec()``, ``from_spec()``, ``fingerprint()``, ``encode`` and
``encode_each`` (:class:`EmbedderProtocol`), decorated with :func:`register`, and a branch in
:func:`make_embedder` if ``embed.*`` should name it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .base import (BACKENDS, DEFAULT_BACKEND, DEFAULT_MODEL, REGISTRY, STATIC, EmbedderError, EmbedderProtocol,
                   default_device, from_spec, model_digest, normalize, quiet_load, register, resolve_model)
from .onnx import OnnxEmbedder, export_onnx, onnx_model_path, quantize_onnx
from .st import Embedder
from .static import StaticEmbedder, distill_static, is_model2vec, is_static, static_model_path
from .store import chunk_boundaries, embed_by_length, embed_to_memmap, is_complete, map_rows

__all__ = [
    "BACKENDS", "DEFAULT_BACKEND", "DEFAULT_MODEL", "REGISTRY", "STATIC", "Embedder", "EmbedderError", "EmbedderProtocol",
    "OnnxEmbedder", "StaticEmbedder", "chunk_boundaries", "default_device", "distill_static", "embed_by_length",
    "embed_to_memmap", "export_onnx", "from_config", "from_spec", "is_complete", "is_model2vec", "is_static", "make_embedder",
    "map_rows", "model_digest", "normalize", "onnx_model_path", "quantize_onnx", "quiet_load", "register",
    "resolve_model", "static_model_path",
]


def make_embedder(model: str = DEFAULT_MODEL, batch_size: int = 64, max_seq_length: int | None = None,
                  device: str | None = None, cache_root: str | Path | None = None, progress: bool = False,
                  say: Callable[[str], None] | None = None, backend: str = DEFAULT_BACKEND):
    """The embedder ``embed.model`` and ``embed.backend`` name: ``static`` (distilled on first use into
    ``cache_root``) or the folder of a model2vec model (no forward pass: the backend does not apply), else a
    sentence-transformers model run by torch, or by ONNX Runtime (``onnx``, ``onnx-int8``: exported on first
    use into ``cache_root``) on the CPU. On another device (``cuda``, or None with a GPU present) the
    backend is torch, in fp16 there."""
    if backend not in BACKENDS:
        raise EmbedderError(f"embed.backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if model == STATIC:
        return StaticEmbedder(static_model_path(cache_root, progress=progress, say=say), batch_size,
                              max_seq_length, name=STATIC)
    if is_model2vec(model):
        return StaticEmbedder(model, batch_size, max_seq_length)
    if backend != "torch" and (device or default_device()) == "cpu":
        path = onnx_model_path(resolve_model(model), cache_root, int8=backend == "onnx-int8", say=say)
        return OnnxEmbedder(path, batch_size, max_seq_length, name=model)
    return Embedder(model, batch_size, max_seq_length, device)


def from_config(embed, cache_root: str | Path | None = None, progress: bool = False,
                say: Callable[[str], None] | None = None):
    """:func:`make_embedder` of an :class:`equal.config.EmbedConfig` (``cfg.embed``): one call for the run,
    the extraction table and the replays, so that they all load the same embedder."""
    return make_embedder(embed.model, embed.batch_size, embed.max_seq_length, embed.device, cache_root, progress,
                         say, backend=embed.backend)
