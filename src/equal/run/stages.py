"""The stages of a live run, one function each, with explicit inputs and outputs.

Each stage reads what it needs from its arguments and the run folder, and returns what later stages need;
nothing is parked on an object. A stage skips what its checkpoint says is done and resumes an interrupted
unit of work (embedding chunk, warm-up batch, selection round). :class:`LiveSteps` gives the recipe
(:func:`equal.select.setup.build_selection`) the live way of doing its steps: extract and journal, train
and save, cluster and save.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from ..align import AlignExamples, apply_adapter, train_full
from ..cluster import Clustering
from ..config import Config
from ..corpus import Corpus
from ..embed import Embedder, make_embedder, map_rows
from ..errors import EqualError, UserError, cause_of
from ..extract.base import EndpointDown, Extractor, SpendCapReached
from ..io import atomic_save_npy, atomic_save_npz, read_jsonl
from ..progress import bar
from ..select.envs import PullResult
from ..select.loop import LoopState, RoundResult
from ..select.policies import ArmStats
from ..select.rewards import SelectedPool
from ..select.setup import Warmup, align_adapter, run_selection
from ..sizing import Plan
from ..types import Document, Extraction, QAPair, RoundRecord
from ..vectors import cache_root, embed_cache_file, embed_corpus, reference_key, reference_vectors
from .folder import RunFolder
from .killpoints import killpoint
from .worklog import UsageMeter, WorkLog

log = logging.getLogger("equal")


class CapReached(EqualError):
    """A hard spend cap (``extract.llm.max_cost`` / ``max_tokens_total``) stopped the run; it is saved
    like an interrupted one and resumes with a higher cap."""

    exit_code = 3
    label = "stopped"


def stop_error(e: BaseException) -> EqualError | None:
    """The one-line error for an extraction that stopped the run, raised here or wrapped by a Ray worker: the
    endpoint is down (:class:`UserError`) or a spend cap was reached (:class:`CapReached`); None for any other."""
    down = cause_of(e, EndpointDown)
    if down is not None:
        return UserError(f"{down} — everything extracted so far is saved; run the same command again to resume")
    cap = cause_of(e, SpendCapReached)
    if cap is not None:
        key = getattr(cap, "key", "") or "extract.llm.max_cost"
        return CapReached(f"{cap}. The run stopped before spending more; everything extracted so far is saved. "
                          f"Raise the cap (--set {key}=...) and run the same command again to resume")
    return None


@dataclass
class Run:
    """What every stage of one live run shares: the config, its folder, the work log and how to talk."""

    cfg: Config
    folder: RunFolder
    work: WorkLog
    say: Callable[[str], None]
    check_stop: Callable[[], None]
    progress: bool = True
    executor: Callable[[], Any] = lambda: None  # started on first use
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ck(self):
        return self.folder.ck

    def stage(self, name: str) -> None:
        """A stage begins: logged in the work log; test kill point ``<name>_start``."""
        self.work.stage(name)
        killpoint(f"{name}_start")

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        self.stage(name)
        t = time.perf_counter()
        try:
            yield
        finally:
            self.ck.add_seconds(name, time.perf_counter() - t)

    def counted(self, encode, kind: str, point: str):
        """``encode`` that counts its texts as work ``kind``, and a chunk callback where a signal may stop the
        run (kill points ``<point>_block`` after an encode call, ``<point>_chunk`` after a committed chunk)."""
        def counted(texts):
            out = encode(texts)
            self.work.add(kind, len(texts))
            killpoint(f"{point}_block")
            return out

        def on_chunk(start: int, stop: int) -> None:  # noqa: ARG001 - the chunk is committed
            killpoint(f"{point}_chunk")
            self.check_stop()
        return counted, on_chunk


class Extraction_:
    """The live extractor as the stages use it: counted, metered, its stop errors made one line."""

    def __init__(self, run: Run, extractor: Extractor, from_config: bool) -> None:
        self.run = run
        self.extractor = extractor
        self.from_config = from_config  # Ray workers can make the same one
        self.usage = UsageMeter(run.folder.state, extractor)

    def __call__(self, docs: list[Document]) -> list[Extraction]:
        try:
            results = self.extractor.extract(docs)
        except (EndpointDown, SpendCapReached) as e:
            raise stop_error(e) from None
        finally:
            self.usage.record()
        self.run.work.add("extracted", len(docs))
        if len(results) != len(docs):
            raise RuntimeError(f"extractor returned {len(results)} results for {len(docs)} documents")
        count_extractions(self.run.ck.extraction, results)
        return results

    def postfix(self) -> str:
        s = self.extractor.stats()
        parts = []
        if s.get("calls") is not None:
            parts.append(f"calls {s.get('calls', 0)}")
        if s.get("cache_hits"):
            parts.append(f"cached {s['cache_hits']}")
        tok = (s.get("prompt_tokens") or 0) + (s.get("completion_tokens") or 0)
        if tok:
            parts.append(f"tokens {tok}")
        if s.get("estimated_cost") is not None:
            parts.append(f"${s['estimated_cost']:.4f}")
        return " ".join(parts)


def count_extractions(counts: dict[str, Any], results: list[Extraction]) -> None:
    if not counts:
        counts.update({"docs": 0, "ok": 0, "empty": 0, "cached": 0, "failed": {}})
    for r in results:
        counts["docs"] += 1
        counts["cached"] += int(r.cached)
        if r.status == "failed":
            counts["failed"][r.reason or "unknown"] = counts["failed"].get(r.reason or "unknown", 0) + 1
        elif r.pairs:
            counts["ok"] += 1
        else:
            counts["empty"] += 1


def extracted_records(res: PullResult, round_no: int) -> list[dict[str, Any]]:
    return [{"doc_id": d, "round": round_no, "n_pairs": int(n), "status": s}
            for d, n, s in zip(res.doc_ids, res.n_pairs, res.status)]


def dataset_record(rec: dict[str, Any]) -> dict[str, Any]:
    """Fixed field order for dataset.jsonl."""
    keys = ("question", "answer", "doc_id", "cluster", "round", "extractor", "rule")
    return {k: rec[k] for k in keys if k in rec}


# ---------------------------------------------------------------- embedding
def reference_stage(run: Run, embedder: Embedder, pairs: list[QAPair]) -> tuple[np.ndarray, np.ndarray]:
    """The reward sample and the prior sample of the reference, embedded (``state/reference.npz``)."""
    state = run.folder.state
    path = state / "reference.npz"
    if path.exists():
        z = np.load(path)
        return z["reward"], z["prior"]
    cfg = run.cfg
    encode, on_chunk = run.counted(embedder.encode, "reference", "reference")
    share = None
    if cfg.embed.cache:
        fp = embedder.fingerprint()
        share = (lambda digest: embed_cache_file(cfg, reference_key(digest, fp, cfg)), run.say)
    reward, prior = reference_vectors(encode, pairs, cfg, store=state, dim=embedder.dim, on_chunk=on_chunk,
                                      progress=run.progress, share=share)
    killpoint("reference")
    atomic_save_npz(path, reward=reward, prior=prior)
    for name in ("reward", "prior"):  # reference.npz holds them now
        for f in (f"reference_{name}.npy", f"reference_{name}.npy.progress.json"):
            (state / f).unlink(missing_ok=True)
    return reward, prior


def embed_stage(run: Run, corpus: Corpus, embedder: Embedder, name: str, shared_model: bool) -> np.ndarray:
    """Every document's vector in ``state/<name>`` (resumable), here or on the executor's workers."""
    encode, on_chunk = run.counted(embedder.encode, "embedded", "embed")
    run.check_stop()
    encode_blocks = None
    if run.cfg.executor != "local":
        def encode_blocks(spans):  # the blocks as they come back, counted as the local path counts them
            # the executor starts (Ray with it) when a first block is due, not for an embedding already there
            remote = run.executor().encode_blocks(corpus, embedder)
            for (b, e), vecs in zip(spans, remote(spans)):
                run.work.add("embedded", e - b)
                killpoint("embed_block")
                yield vecs
    return embed_corpus(corpus, embedder, run.folder.state / name, run.cfg, encode=encode, share=shared_model,
                        progress=run.progress, say=run.say, on_chunk=on_chunk, encode_blocks=encode_blocks)


# ---------------------------------------------------------------- the recipe's steps, live
class LiveSteps:
    """The recipe's steps done for real: extraction journaled in batches, alignment and clusters saved."""

    def __init__(self, run: Run, corpus: Corpus, embedder: Embedder, extraction: Extraction_, env,
                 base: np.ndarray) -> None:
        self.run, self.corpus, self.embedder, self.extraction, self.env = run, corpus, embedder, extraction, env
        self.base = base
        self.clustering: Clustering | None = None

    # ------------------------------------------------------------ warm-up
    def warmup(self, rows: np.ndarray) -> Warmup:
        """Extract the warm-up sample in checkpointed batches."""
        run, cfg, folder = self.run, self.run.cfg, self.run.folder
        run.check_stop()
        with run.timed("warmup"):
            done = int(folder.ck.warmup_docs_done)
            if not folder.done("warmup"):
                with bar("warm-up extraction", total=len(rows), enabled=run.progress,
                         postfix=self.extraction.postfix) as tick:
                    tick(done)
                    for s, res in zip(range(done, len(rows), cfg.extract.batch_docs), self._pulls(rows[done:])):
                        recs = [{**p.to_record(), "doc_index": int(row)}
                                for row, pairs in zip(res.rows, res.pairs) for p in pairs]
                        folder.journals["warmup"].append(recs)
                        folder.journals["warmup_vec"].append_bytes(res.vectors.tobytes())
                        folder.journals["extracted"].append(extracted_records(res, 0))
                        killpoint("warmup_appended")
                        folder.ck.warmup_docs_done = int(s + len(res.rows))
                        folder.commit()
                        killpoint("warmup_batch")
                        tick(len(res.rows))
                folder.mark("warmup")
            recs = list(read_jsonl(folder.journals["warmup"].path))
            vecs = np.fromfile(folder.journals["warmup_vec"].path, dtype=np.float32).reshape(-1, self.embedder.dim)
            if len(recs) != len(vecs):
                raise UserError(f"the warm-up journals in {folder.state} disagree ({len(recs)} pairs, {len(vecs)} "
                                f"vectors); rerun with --restart")
        run.check_stop()
        return Warmup(indices=rows, pair_doc=np.array([r["doc_index"] for r in recs], dtype=np.int64),
                      vectors=vecs, records=recs)

    def _pulls(self, rows: np.ndarray) -> Iterator[PullResult]:
        """The warm-up's batches of ``extract.batch_docs`` documents, extracted in order: here, or (executor ray,
        at least ``ray.min_extract_docs`` documents left, the extractor made from the config) by Ray workers."""
        run, cfg = self.run, self.run.cfg
        bd = cfg.extract.batch_docs
        remote = (cfg.executor != "local" and len(rows) >= max(1, cfg.ray.min_extract_docs)
                  and self.extraction.from_config)
        if not remote:
            for s in range(0, len(rows), bd):
                run.check_stop()
                yield self.env.pull(rows[s: s + bd])
            return
        from ..executors import merge_stats

        run.check_stop()
        try:
            for p in run.executor().extract(self.corpus, rows, bd, self.extraction.extractor, self.embedder):
                run.work.add("extracted", len(p.result))
                count_extractions(run.ck.extraction, p.outcomes)
                run.ck.remote_extractor_stats = merge_stats(run.ck.remote_extractor_stats, p.stats)
                yield p.result
                run.check_stop()
        except Exception as e:  # a worker's stop comes back wrapped by Ray
            err = stop_error(e)
            if err is not None:
                raise err from None
            raise

    # ------------------------------------------------------------ align
    def align(self, warm: Warmup, mode: str, adapter: Callable[[], np.ndarray]) -> tuple[np.ndarray, Any]:
        """The vectors to cluster: the base ones, adapter-mapped ones, or a fully tuned embedder's."""
        run = self.run
        with run.timed("align"):
            vectors = self._align(warm, mode, adapter)
            path = run.folder.state / "adapter.npy"
            W = np.load(path) if path.exists() and vectors is not self.base else None
        run.check_stop()
        return vectors, W

    def _align(self, warm: Warmup, mode: str, adapter) -> np.ndarray:
        run, cfg, folder, base = self.run, self.run.cfg, self.run.folder, self.base
        if mode == "none" or len(warm.indices) == 0:
            return base
        if mode == "full":
            model_dir = folder.out / "model"
            if not folder.done("align"):
                ex = AlignExamples.from_pair_docs(warm.pair_doc, cfg.align.max_pairs, cfg.seed)
                if len(ex) < 2:
                    run.say("align: fewer than 2 warm-up documents gave pairs; using the base embedder")
                    folder.ck.align = {"skipped": "too few examples"}
                else:
                    docs = self.corpus.get(ex.doc_rows)
                    texts = [d.text for d in docs]
                    local = AlignExamples(doc_rows=np.arange(len(docs)), pair_groups=ex.pair_groups)
                    pair_texts = [QAPair(r["question"], r["answer"]).text() for r in warm.records]
                    folder.ck.align = train_full(self.embedder.source, texts, pair_texts, local, cfg.align, model_dir,
                                                 cfg.seed, cfg.embed.max_seq_length, self.embedder.device,
                                                 run.progress)
                killpoint("align")
                folder.mark("align")
            if not (model_dir / "config.json").exists():
                return base
            # the tuned model runs on the configured backend (an int8 run exports and quantizes it too)
            aligned = make_embedder(str(model_dir), cfg.embed.batch_size, cfg.embed.max_seq_length, cfg.embed.device,
                                    cache_root(cfg), say=run.say, backend=cfg.embed.backend)
            vectors = embed_stage(run, self.corpus, aligned, "doc_vectors_full.npy", shared_model=False)
            folder.mark("embed_full")
            return vectors
        aligned_path = folder.state / "doc_vectors_aligned.npy"
        if not folder.done("align"):
            W, stats = align_adapter(base, warm, cfg)
            atomic_save_npy(folder.state / "adapter.npy", W)
            folder.ck.align = stats
            map_rows(base, aligned_path, apply_adapter(W))
            killpoint("align")
            folder.mark("align")
        return np.load(aligned_path, mmap_mode="r")

    # ------------------------------------------------------------ clusters, rankings
    def cluster(self, vectors: np.ndarray, compute: Callable[[], Clustering | None]) -> np.ndarray:
        run, folder = self.run, self.run.folder
        with run.timed("cluster"):
            path = folder.state / "clusters.npz"
            if folder.done("cluster") and path.exists():
                z = np.load(path)
                c = Clustering(centroids=z["centroids"], labels=z["labels"], inertia=float(z["inertia"]))
            else:
                from ..select.registry import is_ranking

                remote = run.cfg.executor != "local" and not is_ranking(run.cfg.policy)
                c = compute(assign_fn=run.executor().assign) if remote else compute()
                if c is None:  # a document ranking: one arm holding every document
                    c = Clustering(centroids=np.asarray(vectors[:0].sum(0, keepdims=True), np.float32),
                                   labels=np.zeros(len(vectors), dtype=np.int32), inertia=0.0)
                atomic_save_npz(path, centroids=c.centroids, labels=c.labels, inertia=np.float64(c.inertia))
                killpoint("cluster")
                folder.mark("cluster")
        self.clustering = c
        return c.labels

    def ranking(self, compute: Callable[[], np.ndarray]) -> np.ndarray:
        path = self.run.folder.state / "ranking.npy"
        if path.exists():
            return np.load(path)
        order = compute()
        atomic_save_npy(path, order)
        return order

    # ------------------------------------------------------------ the arms' start
    def start(self, policy: ArmStats, pool: SelectedPool, labels: np.ndarray, warm: Warmup,
              init: Callable[[], dict[str, Any]], fresh: Callable[[], LoopState]) -> LoopState:
        """The warm-up pairs enter the dataset (round 0) now that their clusters are known, and start the arms
        of the clusters their documents fall in; a resumed run reads the loop state from its checkpoint."""
        run, folder = self.run, self.run.folder
        run.stage("bandit")  # the bandit stage: the arms' start, then the rounds (:func:`rounds_stage`)
        run.timings["bandit"] = time.perf_counter()
        if not folder.done("warmup_written"):
            run.stage("warmup_written")
            recs = []
            for r in warm.records:
                rec = {k: v for k, v in r.items() if k != "doc_index"}
                rec["cluster"] = int(labels[r["doc_index"]])
                rec["round"] = 0
                recs.append(dataset_record(rec))
            folder.journals["dataset"].append(recs)
            info = init()
            folder.ck.bandit = {**fresh().to_dict(), "warmup_arms": info}
            killpoint("warmup_written_appended")
            folder.mark("warmup_written")
        st = folder.ck.bandit
        if int(st["round"]) > 0:  # rebuild the pool of selected pairs from the committed journal
            pool.add(np.fromfile(folder.journals["bandit_vec"].path, dtype=np.float32).reshape(-1, self.embedder.dim))
        return LoopState.from_dict(st)


# ---------------------------------------------------------------- rounds
def rounds_stage(run: Run, sel, env, plan: Plan, extraction: Extraction_) -> ArmStats:
    """The selection rounds, each journaled and committed; returns the policy as the checkpoint holds it."""
    folder = run.folder
    try:
        return _rounds(run, sel, env, plan, extraction)
    finally:
        folder.ck.add_seconds("bandit", time.perf_counter() - run.timings.pop("bandit", time.perf_counter()))


def _rounds(run: Run, sel, env, plan: Plan, extraction: Extraction_) -> ArmStats:
    folder = run.folder
    if not folder.done("bandit"):
        run.stage("rounds")
        bandit_total = max(0, plan.budget_docs - plan.warmup_docs)
        with bar("selection rounds (documents)", total=bandit_total, enabled=run.progress,
                 postfix=extraction.postfix) as tick:
            tick(int(sel.state.docs_used) - plan.warmup_docs)

            def on_round(rr: RoundResult, state: LoopState) -> None:
                write_round(folder, rr)
                killpoint("round_appended")
                folder.ck.bandit.update(state.to_dict())
                folder.commit()
                killpoint("round")
                tick(rr.docs)

            final = run_selection(sel, env, run.cfg, plan, on_round=on_round, check_stop=run.check_stop)
            if final.docs_used < plan.budget_docs:
                run.say("every cluster is exhausted; stopping before the budget is spent")
        folder.mark("bandit")
    sel.policy.load_state_dict(folder.ck.bandit["policy"])
    return sel.policy


def write_round(folder: RunFolder, rr: RoundResult) -> None:
    dataset_recs, round_recs, extracted, vecs = [], [], [], []
    for ap in rr.pulls:
        res = ap.result
        for pairs in res.pairs:
            for p in pairs:
                p.cluster, p.round = ap.arm, rr.round
                dataset_recs.append(dataset_record(p.to_record()))
        round_recs.append(RoundRecord(round=rr.round, cluster=ap.arm, doc_ids=list(res.doc_ids),
                                      n_pairs=int(res.n_pairs.sum()), reward=float(ap.reward),
                                      score=ap.score, pulls=ap.pulls).to_record())
        extracted.extend(extracted_records(res, rr.round))
        vecs.append(res.vectors)
    folder.journals["dataset"].append(dataset_recs)
    folder.journals["rounds"].append(round_recs)
    folder.journals["extracted"].append(extracted)
    folder.journals["bandit_vec"].append_bytes(np.concatenate(vecs).astype(np.float32).tobytes())
