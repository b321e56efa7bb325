"""The chunked, resumable memmap writer of embeddings (:func:`embed_to_memmap`), its length-ordered form
(:func:`embed_by_length`), its progress files (:func:`chunk_boundaries`, :func:`is_complete`), and
:func:`map_rows` (a row-wise transform written atomically)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from ..io import atomic_write_json, read_json
from ..progress import bar


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


def is_static(model: str) -> bool:
    """Whether ``model`` names a static (model2vec) embedder: ``static`` or a model2vec model folder."""
    return model == STATIC or is_model2vec(model)
