"""Executors: where the per-document stages run.

A run's per-document stages are the corpus embedding, the cluster assignment, the extraction of a large
warm-up and ``equal extract-all``. :class:`LocalExecutor` runs them in this process (what every run did
before); :class:`RayExecutor` (``executor: ray``, ``pip install equal[ray]``) runs them as Ray Data jobs:
``map_batches`` over an actor pool whose actors hold the model (or the extractor), each reading its
documents straight from the corpus shards. The bandit loop always stays on the driver.

Both give the same bits. The work is cut the way the local path cuts it, and the results come back in
document order:

* embedding: one encode call per block of :func:`equal.run.encode_block` documents, blocks starting at its
  multiples (as :func:`equal.embed.embed_to_memmap` calls it), with torch's thread count fixed to the
  driver's (``ray.threads``); the driver writes each block into the same memory-mapped file and commits it
  chunk by chunk, so resume works as before, and with either executor;
* assignment: the same chunks of rows (multiples of :data:`equal.cluster.ASSIGN_CHUNK`) searched against the
  same centroids, the inertia summed chunk by chunk in order;
* extraction: the same batches of ``extract.batch_docs`` documents, pairs embedded one per forward pass.

A worker checks that it sees the same corpus (the index key: the shards' sizes, times and hashes) and the
same model (its fingerprint) as the driver, and refuses to work otherwise.
"""

from __future__ import annotations

from .errors import UserError

import logging
import os
import pickle
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from .select.envs import LiveEnv, PullResult
from .types import Extraction

log = logging.getLogger("equal")


class ExecutorError(UserError, RuntimeError):
    """The executor cannot run (Ray missing, a worker that sees other files than the driver)."""


@dataclass
class Pulled:
    """One batch extracted by an executor: the result, per document the extractor's Extraction (status,
    reason, cached, stats), and the extractor's counters that moved (calls, tokens, ...)."""

    result: PullResult
    outcomes: list[Extraction]
    stats: dict[str, Any] = field(default_factory=dict)


def _outcomes(results: list[Extraction]) -> list[Extraction]:
    return list(results)  # their pairs are the PullResult's (pickled once, shared)


def _stats_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in after.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            d = v - before.get(k, 0)
            if d:
                out[k] = d
    return out


def cause_of(e: BaseException | None, kind: type) -> BaseException | None:
    """``e`` or the first exception of its cause/context chain that is a ``kind`` (Ray wraps a worker's)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, kind):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def merge_stats(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """``a`` with the numeric counters of ``b`` added (an extractor's own stats plus its workers')."""
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = (out.get(k) or 0) + v
    return out


def extract_batches(rows: np.ndarray, batch: int, get_docs, extract, encode_each, dim: int,
                    check_stop: Callable[[], None] | None = None) -> Iterator[Pulled]:
    """Extract the documents at ``rows`` ``batch`` at a time, here, in order."""
    captured: list[Extraction] = []

    def capture(docs):
        out = extract(docs)
        captured[:] = list(out)
        return out

    env = LiveEnv(get_docs, capture, encode_each, dim)
    rows = np.asarray(rows, dtype=np.int64)
    for s in range(0, len(rows), batch):
        if check_stop is not None:
            check_stop()
        res = env.pull(rows[s: s + batch])
        yield Pulled(res, _outcomes(captured))


class LocalExecutor:
    """Everything in this process."""

    name = "local"

    def encode_blocks(self, corpus, embedder) -> None:  # noqa: ARG002
        """None: :func:`equal.embed.embed_to_memmap` encodes the blocks itself, here."""
        return None

    def assign(self, vectors: np.ndarray, centroids: np.ndarray, chunk: int) -> tuple[np.ndarray, float]:
        from .cluster import assign

        return assign(vectors, centroids, chunk)

    def extract(self, corpus, rows: np.ndarray, batch: int, extractor, embedder,
                check_stop: Callable[[], None] | None = None) -> Iterator[Pulled]:
        before = extractor.stats()
        for p in extract_batches(rows, batch, corpus.get, extractor.extract, embedder.encode_each, embedder.dim,
                                 check_stop):
            after = extractor.stats()
            p.stats, before = _stats_delta(before, after), after
            yield p

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- Ray
def embedder_spec(embedder) -> dict[str, Any]:
    """What a worker needs to load the same embedder (and the fingerprint it must match)."""
    return {**embedder.spec(), "fingerprint": embedder.fingerprint()}


def load_embedder(spec: dict[str, Any]):
    from .embed import from_spec

    emb = from_spec(spec)
    if emb.fingerprint() != spec["fingerprint"]:
        raise ExecutorError(f"a Ray worker on {os.uname().nodename} loaded the embedding model {spec['path']} with "
                            f"another fingerprint than the driver's: the model files differ on that node")
    return emb


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(int(threads))
    try:
        import faiss

        faiss.omp_set_num_threads(int(threads))
    except ImportError:  # pragma: no cover - faiss is a core dependency
        pass


def _check_corpus(corpus, key: str) -> None:
    if corpus.content_key() != key:
        raise ExecutorError(f"a Ray worker on {os.uname().nodename} sees other corpus files than the driver "
                            f"({corpus.path}): every node must read the same shards (a shared file system)")


class _EmbedWorker:
    """A Ray actor: holds the embedder; per input row ``{start, stop}``, the vectors of those documents."""

    def __init__(self, corpus, corpus_key: str, spec: dict[str, Any], threads: int) -> None:
        _set_threads(threads)
        _check_corpus(corpus, corpus_key)
        self.corpus = corpus
        self.embedder = load_embedder(spec)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vecs = []
        for b, e in zip(batch["start"].tolist(), batch["stop"].tolist()):
            texts = [d.text for d in self.corpus.get(range(b, e))]
            vecs.append(np.ascontiguousarray(self.embedder.encode(texts), dtype=np.float32).tobytes())
        return {"start": batch["start"], "stop": batch["stop"], "vec": np.array(vecs, dtype=object)}


class _AssignWorker:
    """A Ray actor: nearest centroid of rows ``start:stop`` of the vectors file."""

    def __init__(self, path: str, centroids: np.ndarray, threads: int) -> None:
        import faiss

        _set_threads(threads)
        self.vectors = np.load(path, mmap_mode="r")
        self.index = faiss.IndexFlatL2(centroids.shape[1])
        self.index.add(np.ascontiguousarray(centroids, dtype=np.float32))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        labels, inertia = [], []
        for s, e in zip(batch["start"].tolist(), batch["stop"].tolist()):
            dist, idx = self.index.search(np.ascontiguousarray(self.vectors[s: e], dtype=np.float32), 1)
            labels.append(idx[:, 0].astype(np.int32).tobytes())
            inertia.append(float(dist.sum()))
        return {"start": batch["start"], "labels": np.array(labels, dtype=object),
                "inertia": np.array(inertia, dtype=np.float64)}


class _ExtractWorker:
    """A Ray actor: holds an extractor and the embedder; per input row (a batch of corpus rows), the pickled
    :class:`Pulled`."""

    def __init__(self, corpus, corpus_key: str, extract_cfg, spec: dict[str, Any], threads: int) -> None:
        from .extract.registry import make_extractor

        _set_threads(threads)
        _check_corpus(corpus, corpus_key)
        self.corpus = corpus
        self.embedder = load_embedder(spec)
        self.extractor = make_extractor(extract_cfg)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = []
        for raw in batch["rows"].tolist():
            rows = np.frombuffer(raw, dtype=np.int64)
            before = self.extractor.stats()
            pulled = next(extract_batches(rows, len(rows), self.corpus.get, self.extractor.extract,
                                          self.embedder.encode_each, self.embedder.dim))
            pulled.stats = _stats_delta(before, self.extractor.stats())
            out.append(pickle.dumps(pulled, protocol=pickle.HIGHEST_PROTOCOL))
        return {"start": batch["start"], "pulled": np.array(out, dtype=object)}


def _items_per_block(n_items: int, workers: int) -> int:
    """Input items per Ray block: small blocks (results come back, and are committed, in small steps), but
    not more blocks than Ray handles well."""
    return max(1, min(8, -(-n_items // max(1, 2 * workers))), -(-n_items // 2000))


class RayExecutor:
    """The per-document stages as Ray Data jobs (see the module docstring)."""

    name = "ray"

    def __init__(self, cfg, progress: bool = False, say: Callable[[str], None] = log.info) -> None:
        try:
            import ray
            import ray.data  # noqa: F401
        except ImportError as e:
            raise ExecutorError(f"executor ray needs Ray ({e.name or e}); pip install 'equal[ray]'") from None
        import faiss
        import torch

        self.ray = ray
        self.cfg = cfg
        self.say = say
        self.progress = progress
        self._started = False
        if not ray.is_initialized():
            address = cfg.ray.address or os.environ.get("RAY_ADDRESS") or None
            # workers' own output (model load reports) stays in Ray's logs; their errors come back as exceptions
            kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                                      "configure_logging": True, "log_to_driver": False}
            if address is None and cfg.ray.num_cpus:
                kwargs["num_cpus"] = int(cfg.ray.num_cpus)
            ray.init(address=address, **kwargs)
            self._started = True
            say(f"ray: {'connected to ' + address if address else 'started a local Ray'} "
                f"({int(ray.cluster_resources().get('CPU', 0))} CPUs)")
        # the driver's thread counts: what the local executor computes with
        self.threads = int(cfg.ray.threads or torch.get_num_threads())
        self.faiss_threads = int(cfg.ray.threads or faiss.omp_get_max_threads())
        cpus = int(ray.cluster_resources().get("CPU", 1)) or 1
        self.cpus_per_worker = max(1, min(self.threads, cpus))
        self.max_workers = max(1, cpus // self.cpus_per_worker)
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # results in document order
        ctx.enable_progress_bars = bool(progress)
        for name in ("ray.data", "ray.data._internal.execution.streaming_executor"):
            logging.getLogger(name).setLevel(logging.WARNING)

    def _items(self, items: list[dict[str, Any]], workers: int):
        per = _items_per_block(len(items), workers)
        return self.ray.data.from_items(items, override_num_blocks=max(1, -(-len(items) // per)))

    def _workers(self, configured: int | None, n_items: int) -> int:
        return max(1, min(configured or self.max_workers, n_items))

    # ------------------------------------------------------------ embedding
    def encode_blocks(self, corpus, embedder) -> Callable[[list[tuple[int, int]]], Iterator[np.ndarray]]:
        """For :func:`equal.embed.embed_to_memmap`: the vectors of each block, embedded by Ray workers, in order."""
        spec = embedder_spec(embedder)
        dim = int(embedder.dim)
        key = corpus.content_key()
        gpu = str(spec.get("device", "cpu")).startswith("cuda")

        def blocks(spans: list[tuple[int, int]]) -> Iterator[np.ndarray]:
            if not spans:
                return
            workers = self._workers(self.cfg.ray.embed_workers, len(spans))
            if gpu:
                workers = min(workers, max(1, int(self.ray.cluster_resources().get("GPU", 1))))
            self.say(f"ray: embedding {spans[-1][1] - spans[0][0]} documents ({len(spans)} blocks) on {workers} "
                     f"worker(s) x {self.threads} thread(s)")
            ds = self._items([{"start": b, "stop": e} for b, e in spans], workers)
            out = ds.map_batches(_EmbedWorker, fn_constructor_kwargs={
                "corpus": corpus, "corpus_key": key, "spec": spec, "threads": self.threads},
                batch_size=1, batch_format="numpy", concurrency=workers, num_cpus=self.cpus_per_worker,
                num_gpus=1 if gpu else None)
            i = 0
            for row in out.iter_rows():
                b, e = spans[i]
                if (int(row["start"]), int(row["stop"])) != (b, e):
                    raise ExecutorError(f"Ray returned block {row['start']}:{row['stop']} where {b}:{e} was due")
                i += 1
                yield np.frombuffer(row["vec"], dtype=np.float32).reshape(e - b, dim)
            if i != len(spans):
                raise ExecutorError(f"Ray returned {i} of {len(spans)} embedding blocks")
        return blocks

    # ------------------------------------------------------------ assignment
    def assign(self, vectors: np.ndarray, centroids: np.ndarray, chunk: int) -> tuple[np.ndarray, float]:
        path = getattr(vectors, "filename", None)
        if path is None or not os.path.exists(str(path)):  # not a file a worker can open: assign here
            return LocalExecutor().assign(vectors, centroids, chunk)
        n = len(vectors)
        spans = [(s, min(n, s + chunk)) for s in range(0, n, chunk)]
        workers = self._workers(None, len(spans))
        self.say(f"ray: assigning {n} vectors to {len(centroids)} centroids ({len(spans)} chunks) on {workers} "
                 f"worker(s)")
        ds = self._items([{"start": s, "stop": e} for s, e in spans], workers)
        out = ds.map_batches(_AssignWorker, fn_constructor_kwargs={
            "path": str(path), "centroids": np.asarray(centroids, np.float32), "threads": self.faiss_threads},
            batch_size=1, batch_format="numpy", concurrency=workers, num_cpus=self.cpus_per_worker)
        labels = np.empty(n, dtype=np.int32)
        inertia = 0.0
        i = 0
        for row in out.iter_rows():
            s, e = spans[i]
            if int(row["start"]) != s:
                raise ExecutorError(f"Ray returned the labels of row {row['start']} where {s} was due")
            labels[s: e] = np.frombuffer(row["labels"], dtype=np.int32)
            inertia += float(row["inertia"])
            i += 1
        if i != len(spans):
            raise ExecutorError(f"Ray returned {i} of {len(spans)} assignment chunks")
        return labels, inertia

    # ------------------------------------------------------------ extraction
    def extract(self, corpus, rows: np.ndarray, batch: int, extractor, embedder,  # noqa: ARG002 - see below
                check_stop: Callable[[], None] | None = None) -> Iterator[Pulled]:
        """Extract the documents at ``rows`` in batches of ``batch`` on Ray workers, each with its own extractor
        made from ``extract`` (the config): the driver's ``extractor`` object does not travel."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return
        starts = list(range(0, len(rows), batch))
        workers = self._workers(self.cfg.ray.extract_workers, len(starts))
        self.say(f"ray: extracting {len(rows)} documents ({len(starts)} batches) on {workers} worker(s)")
        extract_cfg = self.cfg.extract
        if extract_cfg.cache_dir is None:  # the driver's cache folder, wherever the workers' defaults point
            import dataclasses

            from .vectors import cache_root

            extract_cfg = dataclasses.replace(extract_cfg, cache_dir=str(cache_root(self.cfg)))
        ds = self._items([{"start": s, "rows": rows[s: s + batch].tobytes()} for s in starts], workers)
        out = ds.map_batches(_ExtractWorker, fn_constructor_kwargs={
            "corpus": corpus, "corpus_key": corpus.content_key(), "extract_cfg": extract_cfg,
            "spec": embedder_spec(embedder), "threads": self.threads},
            batch_size=1, batch_format="numpy", concurrency=workers, num_cpus=self.cpus_per_worker)
        i = 0
        rows_out = iter(out.iter_rows())
        while True:
            try:
                row = next(rows_out)
            except StopIteration:
                break
            except Exception as e:  # a worker's EndpointDown comes back wrapped by Ray: raise it as itself
                from .extract.base import EndpointDown

                down = cause_of(e, EndpointDown)
                if down is not None and down is not e:
                    raise EndpointDown(str(down)) from e
                raise
            if int(row["start"]) != starts[i]:
                raise ExecutorError(f"Ray returned the extraction batch at {row['start']} where {starts[i]} was due")
            i += 1
            yield pickle.loads(row["pulled"])
            if check_stop is not None:
                check_stop()
        if i != len(starts):
            raise ExecutorError(f"Ray returned {i} of {len(starts)} extraction batches")

    def close(self) -> None:
        if self._started and self.ray.is_initialized():
            self.ray.shutdown()
        self._started = False


def make_executor(cfg, progress: bool = False, say: Callable[[str], None] = log.info):
    """The executor ``cfg.executor`` names."""
    if cfg.executor == "ray":
        return RayExecutor(cfg, progress=progress, say=say)
    return LocalExecutor()
