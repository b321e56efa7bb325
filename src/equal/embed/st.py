"""The sentence-transformers embedder (torch): the shipped MiniLM, or any sentence-transformers model."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .base import DEFAULT_MODEL, EmbedderError, default_device, model_digest, offline, quiet_load, register, resolve_model


def load_sentence_transformer(path: str, device: str, name: str | None = None):
    """``SentenceTransformer(path, device)``, offline for a local folder, without transformers' load report."""
    if Path(path).exists():
        offline()
    from sentence_transformers import SentenceTransformer

    try:
        with quiet_load():
            return SentenceTransformer(path, device=device)
    except Exception as e:  # hub errors, bad folders: one clear line
        raise EmbedderError(f"cannot load embedding model '{name or path}': {type(e).__name__}: {e}"[:500]) from None


@register
class Embedder:
    """Sentence-transformers model producing L2-normalised float32 vectors.

    Parameters
    ----------
    model : str
        Name or local path; the default loads the shipped all-MiniLM-L6-v2 offline.
    batch_size : int
        Texts per forward pass.
    max_seq_length : int, optional
        Token limit (None: the model's own).
    device : str, optional
        Torch device; None picks CUDA when available (fp16 there).
    """

    kind = "st"
    backend = "torch"

    def __init__(self, model: str = DEFAULT_MODEL, batch_size: int = 64, max_seq_length: int | None = None,
                 device: str | None = None) -> None:
        self.name = model
        self.path = resolve_model(model)
        self.source = self.path
        self.device = device or default_device()
        self.model = load_sentence_transformer(self.path, self.device, model)
        if max_seq_length:
            self.model.max_seq_length = int(max_seq_length)
        self.half = str(self.device).startswith("cuda")
        if self.half:
            self.model.half()  # fp16 on GPU: twice the throughput, vectors normalised to float32 after
        self.batch_size = batch_size
        getdim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(getdim())

    @property
    def max_seq_length(self) -> int:
        return int(self.model.max_seq_length)

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "batch_size": self.batch_size,
                "max_seq_length": self.max_seq_length, "device": str(self.device)}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "Embedder":
        return cls(spec["path"], spec["batch_size"], spec["max_seq_length"], spec["device"])

    def fingerprint(self) -> str:
        """The model's files (:func:`model_digest`) and token limit: equal fingerprints, equal vectors."""
        fp16 = "|fp16" if self.half else ""  # fp16 vectors differ from fp32 ones: never shared with them
        h = hashlib.sha1(f"st|{model_digest(self.path)}|{self.model.max_seq_length}{fp16}".encode())
        return h.hexdigest()[:16]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def encode_each(self, texts: Sequence[str]) -> np.ndarray:
        """Like :meth:`encode`, but every text in a forward pass of its own (no padding), in one call: a
        vector never depends on the other texts, so any grouping gives the same bits."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self.model.encode(list(texts), batch_size=1, normalize_embeddings=True, convert_to_numpy=True,
                                 show_progress_bar=False)
        return np.ascontiguousarray(vecs, dtype=np.float32)
