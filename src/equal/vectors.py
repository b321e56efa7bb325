"""Corpus and reference vectors, embedded resumably and shared between runs through the embedding cache.

A live run, an extraction table and a replay all embed through these functions, so that the same model,
corpus and config give the same vectors bit for bit wherever they are computed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from .config import Config
from .corpus import Corpus
from .embed import Embedder, embed_by_length, embed_to_memmap, is_complete
from .io import atomic_save_npy, atomic_write_json
from .select import recipe
from .types import QAPair

log = logging.getLogger("equal")

def cache_root(cfg: Config) -> Path:
    """The cache root: ``extract.cache_dir``, else ``$XDG_CACHE_HOME/equal`` (extractions, shared corpus
    embeddings, the distilled static model)."""
    from .extract.cache import default_cache_dir

    return Path(cfg.extract.cache_dir) if cfg.extract.cache_dir else default_cache_dir()


def embed_cache_file(cfg: Config, key: dict) -> Path | None:
    """Where a finished embedding (of a corpus, or of a reference's samples) for ``key`` is shared between
    runs (None: sharing is off)."""
    if not cfg.embed.cache:
        return None
    root = cache_root(cfg)
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return root / "embeddings" / f"{digest}.npy"


def reference_key(texts_digest: str, fingerprint: str, cfg: Config) -> dict:
    """What the vectors of a sample of the reference depend on: the model, the encode batch and the texts
    (their digest, as :func:`reference_vectors` computes it)."""
    return {"kind": "reference", "model": fingerprint, "batch": int(cfg.embed.batch_size), "texts": texts_digest}


def encode_block(cfg: Config, embedder) -> int:
    """Documents per encode call: ``embed.sort_window`` rounded up to a multiple of the batch size (the
    encoder sorts one call's texts by length into batches), or one batch. Blocks start at multiples of it."""
    bs = int(embedder.batch_size)
    w = int(cfg.embed.sort_window or bs)
    return max(bs, -(-w // bs) * bs)


def embed_corpus(corpus: Corpus, embedder: Embedder, path: Path, cfg: Config, encode=None, share: bool = True,
                 progress: bool = True, say=log.info, on_chunk=None, encode_blocks=None) -> np.ndarray:
    """Every document's vector in a resumable ``.npy`` memmap at ``path``, taken from (or given to)
    the shared embedding cache when ``share`` and ``embed.cache`` allow.

    The encoder is called once per block of documents aligned at multiples of its size (:func:`encode_block`:
    ``embed.sort_window``, else ``embed.batch_size``), so a vector depends on the model and its block only: the checkpoint chunk (``embed.chunk_docs``) and where a
    run was interrupted change nothing, and the cache key names the block size, not the chunk size.
    ``encode_blocks`` (an executor's, :meth:`equal.executors.RayExecutor.encode_blocks`) embeds the same blocks
    elsewhere and yields them in order."""
    n = len(corpus)
    block = encode_block(cfg, embedder)
    key = {"model": embedder.fingerprint(), "corpus": corpus.content_key(), "n": n, "block": block}
    shared = embed_cache_file(cfg, key) if share else None
    if shared is not None and shared.exists() and not is_complete(path):
        # another run on this corpus with this model embedded it already: take its file
        try:
            link_or_copy(shared, path)
            atomic_write_json(path.with_name(path.name + ".progress.json"),
                              {"key": key, "shape": [n, embedder.dim], "rows": n, "block": block, "segments": [],
                               "reused_from": str(shared)})
            say(f"corpus embeddings reused from {shared}")
        except OSError:
            pass
    vectors = embed_to_memmap(path, n, embedder.dim, lambda a, b: [d.text for d in corpus.get(range(a, b))],
                              encode or embedder.encode, chunk=cfg.embed.chunk_docs, label="embedding corpus",
                              progress=progress, key=key, block=block, on_chunk=on_chunk,
                              encode_blocks=encode_blocks)
    if shared is not None and not shared.exists():
        try:
            link_or_copy(path, shared)
        except OSError as e:  # a cache we cannot write is not a reason to stop
            log.warning("could not share corpus embeddings in %s: %s", shared, e)
    return vectors


def reference_vectors(encode, pairs: list[QAPair], cfg: Config, store: Path | None = None, dim: int | None = None,
                      on_chunk=None, progress: bool = False, only: str | None = None,
                      share=None) -> tuple[np.ndarray, np.ndarray]:
    """Embed the reward sample (seeded) and the prior sample (fixed) of the reference, each in blocks of
    ``embed.batch_size`` texts in order of decreasing length (:func:`equal.embed.embed_by_length`: the
    grouping of one encode call over the sample), so that a replay that calls this gets the same vectors bit
    for bit. With ``store`` (a folder) and ``dim``, each sample is embedded in checkpointed chunks of
    ``embed.chunk_docs`` into ``store/reference_{reward,prior}.npy``, and an interrupted call resumes.
    ``share`` (``(path_of, say)``: ``path_of(digest)`` is the shared cache file of a sample whose texts have
    that digest, or None) takes a
    sample that another run embedded from that file, and leaves each newly embedded sample there."""
    r_rows = recipe.reward_sample(len(pairs), cfg.score.reference_sample, cfg.seed)
    p_rows = recipe.prior_sample(len(pairs), cfg.score.prior_sample)
    out = []
    for name, rows in (("reward", r_rows), ("prior", p_rows)):
        if only is not None and name != only:  # ``only="reward"``: the prior sample is seed-independent
            out.append(None)
            continue
        texts = [pairs[int(i)].text() for i in rows]
        digest = hashlib.sha1("\x00".join(texts).encode("utf-8", "replace")).hexdigest()
        shared = share[0](digest) if share is not None else None
        if shared is not None and shared.exists():
            try:  # another run embedded this sample with this model
                out.append(np.load(shared))
                share[1](f"reference embeddings ({name} sample) reused from {shared}")
                continue
            except (OSError, ValueError) as e:
                log.warning("could not read shared reference embeddings %s (%s); embedding them", shared, e)
        path = key = None
        if store is not None:
            path = Path(store) / f"reference_{name}.npy"
            key = {"sample": name, "texts": digest}
        out.append(embed_by_length(encode, texts, cfg.embed.batch_size, path, dim, cfg.embed.chunk_docs, key,
                                   on_chunk, progress, f"embedding reference ({name})"))
        if shared is not None:
            try:
                atomic_save_npy(shared, out[-1])
            except OSError as e:  # a cache we cannot write is not a reason to stop
                log.warning("could not share reference embeddings in %s: %s", shared, e)
    return out[0], out[1]


def link_or_copy(src: Path, dst: Path) -> None:
    """Place ``src`` at ``dst`` atomically: a hard link where possible, else a copy."""
    import shutil

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
