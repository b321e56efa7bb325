"""The static embedder: a model2vec model (token vectors averaged), distilled offline from the shipped MiniLM
on first use and kept in ``<cache root>/models/static-<hash of MiniLM's files>``, or any model2vec folder."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .base import (DEFAULT_MODEL, STATIC, EmbedderError, model_digest, normalize, offline, quiet_load, register,
                   resolve_model)


def is_model2vec(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding a model2vec static model."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text(encoding="utf-8")).get("model_type") == "model2vec"
    except (OSError, ValueError):
        return False


def is_static(model: str) -> bool:
    """Whether ``embed.model`` names a static model (``static``, or a model2vec folder): no forward pass, so
    no full fine-tune and no backend choice."""
    return model == STATIC or is_model2vec(model)


def distill_static(base: str | Path, out: Path, pca_dims: int = 256, token_remove_pattern: str | None = None,
                   progress: bool = False) -> Path:
    """Distil a model2vec static model from the sentence-transformers model at ``base`` into ``out``.

    Runs offline (``base`` is a local folder). ``token_remove_pattern`` (a regex) leaves tokens out of the
    vocabulary (model2vec's own default drops ``[unusedN]``); the tests use it for a small, fast model.
    Written to a temporary folder and renamed into place, so ``out`` is always whole."""
    import contextlib
    import io

    offline()
    try:
        from model2vec.distill import distill
    except ImportError as e:  # pragma: no cover - model2vec[distill] is a core dependency
        raise EmbedderError(f"distilling a static model needs model2vec[distill]: {e}") from None
    kwargs: dict = {"pca_dims": pca_dims}
    if token_remove_pattern is not None:
        kwargs["token_remove_pattern"] = token_remove_pattern
    quiet = contextlib.redirect_stderr(io.StringIO()) if not progress else contextlib.nullcontext()
    try:
        with quiet, quiet_load():
            model = distill(model_name=str(base), **kwargs)
    except Exception as e:
        raise EmbedderError(f"cannot distil a static model from {base}: {type(e).__name__}: {e}"[:500]) from None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    try:
        os.replace(tmp, out)
    except OSError:  # another process put one there first: keep it
        shutil.rmtree(tmp, ignore_errors=True)
        if not is_model2vec(out):
            raise
    return out


def static_model_path(cache_root: str | Path | None = None, base: str = DEFAULT_MODEL, progress: bool = False,
                      say: Callable[[str], None] | None = None) -> Path:
    """The static model distilled from ``base`` (default: the shipped MiniLM) in ``<cache root>/models``,
    distilled there first if it is not there yet (a few minutes on two CPU cores). The folder is named by a
    hash of the base model's files, so a different base never reuses it."""
    if cache_root is None:
        from ..extract.cache import default_cache_dir

        cache_root = default_cache_dir()
    src = resolve_model(base)
    out = Path(cache_root) / "models" / f"static-{model_digest(src)}"
    if not is_model2vec(out):
        if say is not None:
            say(f"distilling a static embedding model from {base} into {out} (once; a few minutes)")
        distill_static(src, out, progress=progress)
    return out


@register
class StaticEmbedder:
    """A model2vec static model: token vectors averaged, L2-normalised float32 vectors.

    A vector depends on its own text only (no padding, no batch), so any grouping gives the same bits and
    :meth:`encode_each` is :meth:`encode`. ``max_seq_length`` truncates texts to that many tokens (None:
    the model's own limit).
    """

    kind = "static"
    backend = "static"

    def __init__(self, path: str | Path, batch_size: int = 64, max_seq_length: int | None = None,
                 name: str | None = None) -> None:
        offline()
        from model2vec import StaticModel

        self.path = str(path)
        self.source = self.path
        self.name = name or self.path
        try:
            with quiet_load():
                self.model = StaticModel.from_pretrained(self.path)
        except Exception as e:
            raise EmbedderError(f"cannot load static model '{path}': {type(e).__name__}: {e}"[:500]) from None
        # float32 means for every text, whatever dtype the table was saved in
        self.model.embedding = np.ascontiguousarray(self.model.embedding, dtype=np.float32)
        self.batch_size = batch_size
        self.max_seq_length = int(max_seq_length) if max_seq_length else self.model.max_length
        self.device = "cpu"
        self.dim = int(self.model.dim)

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "name": self.name, "batch_size": self.batch_size,
                "max_seq_length": self.max_seq_length}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "StaticEmbedder":
        return cls(spec["path"], spec["batch_size"], spec["max_seq_length"], name=spec["name"])

    def fingerprint(self) -> str:
        h = hashlib.sha1(f"static|{model_digest(self.path)}|{self.max_seq_length}".encode())
        return h.hexdigest()[:16]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self.model.encode(list(texts), max_length=self.max_seq_length, batch_size=self.batch_size,
                                 normalize=False, use_multiprocessing=False, show_progress_bar=False)
        return normalize(np.asarray(vecs, dtype=np.float32))

    encode_each = encode
