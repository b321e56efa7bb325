"""Compose the stages into a run folder, with checkpoints so that a run can be killed and resumed.

The run folder is the API between commands::

    config.yaml      the effective config (a resumed run must match it)
    dataset.jsonl    every kept pair with provenance (round 0 = warm-up)
    rounds.jsonl     one line per bandit pull
    summary.json     counts, timings, skips, final OT, the config
    model/           the aligned embedder (align.mode = full)
    state/           checkpoints: corpus index, embeddings, clusters, journals

Journals (``dataset.jsonl``, ``rounds.jsonl``, ``state/*.jsonl|f32|i64``) are
append-only; ``state/checkpoint.json`` (written atomically after each unit of
work) records their committed sizes, and a resumed run cuts them back to it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import signal
import sys
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from . import __version__
from .align import AlignExamples, apply_adapter, train_adapter, train_full, warmup_indices
from .cluster import Clustering, kmeans
from .config import Config, ConfigError, result_fields_changed
from .corpus import Corpus, CorpusError
from .embed import Embedder, embed_to_memmap, is_complete, map_rows
from .extract.base import EndpointDown, Extractor, make_extractor
from .io import (Journal, atomic_save_npy, atomic_save_npz, atomic_write_json, atomic_write_text, read_json,
                 read_jsonl)
from .policies import UCB
from .progress import bar
from .reference import ReferenceError, load_reference
from .score import Scorer
from .types import Document, Extraction, QAPair, RoundRecord

log = logging.getLogger("equal")


class RunError(RuntimeError):
    """A user-facing problem that stops a run before or during work (one line, no traceback)."""


class Interrupted(RuntimeError):
    """SIGINT/SIGTERM arrived; state was saved and the run can be resumed."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum


# ---------------------------------------------------------------- sizing
@dataclass(frozen=True)
class Plan:
    """Sizes derived from the corpus and the config (the 'auto' values resolved)."""

    n_docs: int
    budget_docs: int
    warmup_docs: int
    k: int
    clusters_per_round: int
    docs_per_pull: int

    @classmethod
    def make(cls, cfg: Config, n_docs: int) -> "Plan":
        budget = int(round(cfg.budget * n_docs)) if cfg.budget <= 1 else int(cfg.budget)
        budget = max(1, min(budget, n_docs))
        warm = min(int(budget * cfg.align.warmup_fraction), cfg.align.warmup_max_docs)
        if cfg.cluster.k is not None:
            k = cfg.cluster.k
            if k > n_docs:
                raise RunError(f"cluster.k={k} is larger than the corpus ({n_docs} usable documents)")
        else:
            target = math.sqrt(n_docs) if warm == 0 else min(math.sqrt(n_docs), warm / 4)
            k = int(min(1000, max(2, round(target)), n_docs))
        cpr = cfg.bandit.clusters_per_round or int(min(50, max(1, round(k / 25))))
        return cls(n_docs=n_docs, budget_docs=budget, warmup_docs=warm, k=k, clusters_per_round=min(cpr, k),
                   docs_per_pull=cfg.bandit.docs_per_pull)


@dataclass
class RunResult:
    out: Path
    summary: dict[str, Any]
    resumed: bool = False
    already_finished: bool = False

    @property
    def dataset_path(self) -> Path:
        return self.out / "dataset.jsonl"


# ---------------------------------------------------------------- test hooks
_HOOK_COUNTS: Counter[str] = Counter()


def _hook(name: str) -> None:
    """Test-only: ``EQUAL_TEST_KILL_AT=name:n`` SIGKILLs this process at the n-th pass of point ``name``."""
    spec = os.environ.get("EQUAL_TEST_KILL_AT")
    if not spec:
        return
    _HOOK_COUNTS[name] += 1
    for item in spec.split(","):
        point, _, count = item.partition(":")
        if point == name and _HOOK_COUNTS[name] == int(count or 1):
            os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------- the run
class Pipeline:
    """One run of EQUAL: ``Pipeline(cfg).run()``.

    Stages: index → reference → warm-up extraction → embed (+ align) → cluster →
    bandit rounds → finalize. Each stage records completion in
    ``state/checkpoint.json``; an interrupted stage resumes from its last
    complete unit (embedding chunk, warm-up batch, bandit round).
    """

    def __init__(self, cfg: Config, progress: bool = True, restart: bool = False,
                 extractor: Extractor | None = None, messages: bool | None = None) -> None:
        self.cfg = cfg
        self.progress = progress
        self.messages = progress if messages is None else messages
        self.restart = restart
        self._extractor = extractor
        self.out = Path(cfg.out)
        self.state_dir = self.out / "state"
        self._stop_signal: int | None = None
        self.notices: list[str] = []

    # ------------------------------------------------------------ helpers
    def say(self, msg: str) -> None:
        self.notices.append(msg)
        log.info(msg)
        if self.messages:
            print(msg, file=sys.stderr, flush=True)

    def _check_stop(self) -> None:
        if self._stop_signal is not None:
            raise Interrupted(self._stop_signal)

    @contextmanager
    def _signals(self) -> Iterator[None]:
        if threading_main():
            def handler(signum, frame):  # noqa: ARG001
                if self._stop_signal is not None:  # second signal: give up at once
                    raise KeyboardInterrupt
                self._stop_signal = signum
                print(f"\nequal: signal {signum} received, finishing the current unit of work and saving ...",
                      file=sys.stderr, flush=True)

            old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for s, h in old.items():
                    signal.signal(s, h)
        else:
            yield

    @contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.ck.setdefault("stage_seconds", {})
            self.ck["stage_seconds"][stage] = self.ck["stage_seconds"].get(stage, 0.0) + time.perf_counter() - t

    def _commit(self) -> None:
        """Record journal sizes and loop state atomically: the single point of truth for resume."""
        self.ck["journals"] = {name: j.size() for name, j in self.journals.items()}
        atomic_write_json(self.state_dir / "checkpoint.json", self.ck)

    # ------------------------------------------------------------ set-up
    def _prepare_folder(self) -> bool:
        """Create or check the run folder; returns True when resuming."""
        cfg_path = self.out / "config.yaml"
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self.state_dir.mkdir(exist_ok=True)
            probe = self.out / ".write-test"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as e:
            raise RunError(f"cannot write to the output folder {self.out}: {e.strerror or e}") from None
        ck_path = self.state_dir / "checkpoint.json"
        if self.restart:
            import shutil

            for name in ("dataset.jsonl", "rounds.jsonl", "summary.json", "report.md", "config.yaml"):
                (self.out / name).unlink(missing_ok=True)
            for folder in (self.state_dir, self.out / "model", self.out / "report"):
                shutil.rmtree(folder, ignore_errors=True)
            self.state_dir.mkdir(exist_ok=True)
        resumed = ck_path.exists()
        if resumed:
            import yaml

            old = yaml.safe_load(cfg_path.read_text()) if cfg_path.exists() else {}
            changed = result_fields_changed(old or {}, self.cfg.to_dict())
            if changed:
                raise RunError(
                    f"{self.out} holds a run with a different config ({', '.join(changed)} changed); "
                    f"use another --out, or --restart to start over")
            self.ck = read_json(ck_path)
        else:
            self.ck = {"version": __version__, "done": [], "stage_seconds": {}}
        if "finalize" not in self.ck["done"]:  # a finished run folder is left exactly as it is
            atomic_write_text(cfg_path, self.cfg.to_yaml(comments=False))
        self.journals = {
            "dataset": Journal(self.out / "dataset.jsonl"),
            "rounds": Journal(self.out / "rounds.jsonl"),
            "warmup": Journal(self.state_dir / "warmup_pairs.jsonl"),
            "warmup_vec": Journal(self.state_dir / "warmup_vectors.f32"),
            "bandit_vec": Journal(self.state_dir / "bandit_vectors.f32"),
        }
        committed = self.ck.get("journals", {})
        for name, j in self.journals.items():
            dropped = j.truncate(int(committed.get(name, 0)))
            if dropped:
                self.say(f"resume: dropped {dropped} uncommitted bytes from {j.path.name}")
        return resumed

    def _done(self, stage: str) -> bool:
        return stage in self.ck["done"]

    def _mark(self, stage: str) -> None:
        if stage not in self.ck["done"]:
            self.ck["done"].append(stage)
        self._commit()

    # ------------------------------------------------------------ main
    def run(self) -> RunResult:
        resumed = self._prepare_folder()
        if self._done("finalize") and (self.out / "summary.json").exists():
            self.say(f"run in {self.out} is already finished; nothing to do (use --restart to start over)")
            return RunResult(self.out, read_json(self.out / "summary.json"), resumed=True, already_finished=True)
        if resumed:
            self.say(f"resuming the run in {self.out} (stages done: {', '.join(self.ck['done']) or 'none'})")
        with self._signals():
            try:
                return self._run_stages(resumed)
            finally:
                if self._extractor is not None:
                    self._extractor.close()

    def _run_stages(self, resumed: bool) -> RunResult:
        cfg = self.cfg
        with self._timed("index"):
            try:
                corpus = Corpus(cfg.corpus, cfg.corpus_options, index_dir=self.state_dir, progress=self.progress)
            except CorpusError as e:
                raise RunError(str(e)) from None
            try:
                reference = load_reference(cfg.reference)
            except ReferenceError as e:
                raise RunError(str(e)) from None
        plan = Plan.make(cfg, len(corpus))
        self.corpus, self.plan = corpus, plan
        self.ck["plan"] = plan.__dict__
        if not resumed:
            self.say(f"corpus: {len(corpus)} documents; budget {plan.budget_docs} extractions "
                     f"({plan.warmup_docs} warm-up); k={plan.k}, {plan.clusters_per_round} cluster(s) x "
                     f"{plan.docs_per_pull} docs per round")
        if self._extractor is None:
            self._extractor = make_extractor(cfg.extract)
        self.extractor = self._extractor
        with self._timed("load_embedder"):
            self.embedder = Embedder(cfg.embed.model, cfg.embed.batch_size, cfg.embed.max_seq_length, cfg.embed.device)
        with self._timed("reference"):
            ref_vecs = self._reference_vectors(reference.pairs)
        self.scorer = Scorer(ref_vecs, self.embedder.encode, cfg.score.metric, cfg.score.method, cfg.score.sinkhorn_reg)

        with self._timed("warmup"):
            warm = self._warmup()
        self._check_stop()
        with self._timed("embed_align"):
            vectors = self._embed_and_align(warm)
        self._check_stop()
        with self._timed("cluster"):
            clustering = self._cluster(vectors)
        del vectors
        with self._timed("bandit"):
            policy = self._bandit(clustering, warm)
        summary = self._finalize(clustering, policy, reference)
        return RunResult(self.out, summary, resumed=resumed)

    # ------------------------------------------------------------ stages
    def _reference_vectors(self, pairs: list[QAPair]) -> np.ndarray:
        path = self.state_dir / "reference.npy"
        if path.exists():
            return np.load(path)
        n = self.cfg.score.reference_sample
        rng = np.random.default_rng([self.cfg.seed, 0x7EF])
        idx = np.sort(rng.permutation(len(pairs))[:n]) if n and n < len(pairs) else np.arange(len(pairs))
        vecs = self.embedder.encode([pairs[i].text() for i in idx])
        atomic_save_npy(path, vecs)
        return vecs

    def _extract(self, docs: list[Document]) -> list[Extraction]:
        try:
            results = self.extractor.extract(docs)
        except EndpointDown as e:
            raise RunError(f"{e} — everything extracted so far is saved; run the same command again to resume") from None
        if len(results) != len(docs):
            raise RuntimeError(f"extractor returned {len(results)} results for {len(docs)} documents")
        counts = self.ck.setdefault("extraction", {"docs": 0, "ok": 0, "empty": 0, "cached": 0, "failed": {}})
        for r in results:
            counts["docs"] += 1
            counts["cached"] += int(r.cached)
            if r.status == "failed":
                counts["failed"][r.reason or "unknown"] = counts["failed"].get(r.reason or "unknown", 0) + 1
            elif r.pairs:
                counts["ok"] += 1
            else:
                counts["empty"] += 1
        return results

    def _warmup(self) -> dict[str, np.ndarray]:
        """Extract the warm-up sample in checkpointed batches. Returns pair vectors and their doc indices."""
        plan = self.plan
        idx = warmup_indices(plan.n_docs, plan.warmup_docs, self.cfg.seed)
        done = int(self.ck.get("warmup_docs_done", 0))
        if not self._done("warmup"):
            with bar("warm-up extraction", total=len(idx), enabled=self.progress,
                     postfix=self._extract_postfix) as tick:
                tick(done)
                for s in range(done, len(idx), self.cfg.extract.batch_docs):
                    self._check_stop()
                    batch = idx[s: s + self.cfg.extract.batch_docs]
                    docs = self.corpus.get(batch)
                    results = self._extract(docs)
                    recs, texts = [], []
                    for doc, res in zip(docs, results):
                        for p in res.pairs:
                            recs.append({**p.to_record(), "doc_index": doc.index})
                            texts.append(p.text())
                    self.journals["warmup"].append(recs)
                    self.journals["warmup_vec"].append_bytes(self.embedder.encode(texts).tobytes())
                    _hook("warmup_appended")
                    self.ck["warmup_docs_done"] = int(s + len(batch))
                    self._commit()
                    _hook("warmup_batch")
                    tick(len(batch))
            self._mark("warmup")
        recs = list(read_jsonl(self.journals["warmup"].path))
        vecs = np.fromfile(self.journals["warmup_vec"].path, dtype=np.float32).reshape(-1, self.embedder.dim)
        if len(recs) != len(vecs):
            raise RuntimeError("warm-up journals disagree; rerun with --restart")
        return {"indices": idx, "pair_doc": np.array([r["doc_index"] for r in recs], dtype=np.int64),
                "vectors": vecs, "records": recs}

    def _corpus_texts(self, start: int, stop: int) -> list[str]:
        return [d.text for d in self.corpus.get(range(start, stop))]

    def _embed_cache_file(self, key: dict) -> Path | None:
        """Where a finished corpus embedding for ``key`` is shared between runs (None: sharing is off)."""
        if not self.cfg.embed.cache:
            return None
        from .extract.cache import default_cache_dir

        root = Path(self.cfg.extract.cache_dir) if self.cfg.extract.cache_dir else default_cache_dir()
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
        return root / "embeddings" / f"{digest}.npy"

    def _embed_corpus(self, embedder: Embedder, name: str) -> np.ndarray:
        path = self.state_dir / name
        key = {"model": embedder.fingerprint(), "corpus": self.corpus.content_key(), "n": len(self.corpus),
               "chunk": self.cfg.embed.chunk_docs}
        shared = self._embed_cache_file(key) if embedder is self.embedder else None
        if shared is not None and shared.exists() and not is_complete(path):
            # another run on this corpus with this model embedded it already: take its file
            try:
                _link_or_copy(shared, path)
                atomic_write_json(path.with_name(path.name + ".progress.json"),
                                  {"key": key, "shape": [len(self.corpus), embedder.dim], "rows": len(self.corpus)})
                self.say(f"corpus embeddings reused from {shared}")
            except OSError:
                pass

        def encode(texts):
            self._check_stop()
            out = embedder.encode(texts)
            _hook("embed_chunk")
            return out

        vectors = embed_to_memmap(path, len(self.corpus), embedder.dim, self._corpus_texts, encode,
                                  chunk=self.cfg.embed.chunk_docs, label="embedding corpus",
                                  progress=self.progress, key=key)
        if shared is not None and not shared.exists():
            try:
                _link_or_copy(path, shared)
            except OSError as e:  # a cache we cannot write is not a reason to stop
                log.warning("could not share corpus embeddings in %s: %s", shared, e)
        return vectors

    def _embed_and_align(self, warm: dict[str, np.ndarray]) -> np.ndarray:
        cfg, mode = self.cfg, self.cfg.align.mode
        ex = AlignExamples.from_pair_docs(warm["pair_doc"], cfg.align.max_pairs, cfg.seed)
        if mode == "full":
            model_dir = self.out / "model"
            if not self._done("align"):
                if len(ex) < 2:
                    self.say("align: fewer than 2 warm-up documents gave pairs; using the base embedder")
                    self.ck["align"] = {"skipped": "too few examples"}
                else:
                    docs = self.corpus.get(ex.doc_rows)
                    texts = [d.text for d in docs]
                    local = AlignExamples(doc_rows=np.arange(len(docs)), pair_groups=ex.pair_groups)
                    pair_texts = [QAPair(r["question"], r["answer"]).text() for r in warm["records"]]
                    self.ck["align"] = train_full(self.embedder.path, texts, pair_texts, local, cfg.align, model_dir,
                                                  cfg.seed, cfg.embed.max_seq_length, self.embedder.device,
                                                  self.progress)
                _hook("align")
                self._mark("align")
            aligned = (Embedder(str(model_dir), cfg.embed.batch_size, cfg.embed.max_seq_length, cfg.embed.device)
                       if (model_dir / "config.json").exists() else self.embedder)
            vectors = self._embed_corpus(aligned, "doc_vectors.npy")
            self._mark("embed")
            return vectors
        vectors = self._embed_corpus(self.embedder, "doc_vectors.npy")
        self._mark("embed")
        if mode == "none":
            return vectors
        aligned_path = self.state_dir / "doc_vectors_aligned.npy"
        if not self._done("align"):
            doc_vecs = np.asarray(vectors[ex.doc_rows]) if len(ex) else np.zeros((0, vectors.shape[1]), np.float32)
            local = AlignExamples(doc_rows=np.arange(len(ex)), pair_groups=ex.pair_groups)
            W, stats = train_adapter(doc_vecs, warm["vectors"], local, cfg.align, cfg.seed, self.progress)
            atomic_save_npy(self.state_dir / "adapter.npy", W)
            self.ck["align"] = stats
            map_rows(vectors, aligned_path, apply_adapter(W))
            _hook("align")
            self._mark("align")
        return np.load(aligned_path, mmap_mode="r")

    def _cluster(self, vectors: np.ndarray) -> Clustering:
        path = self.state_dir / "clusters.npz"
        if self._done("cluster") and path.exists():
            z = np.load(path)
            return Clustering(centroids=z["centroids"], labels=z["labels"], inertia=float(z["inertia"]))
        cc = self.cfg.cluster
        c = kmeans(vectors, self.plan.k, cc.niter, self.cfg.seed, cc.max_points_per_centroid, cc.nredo)
        atomic_save_npz(path, centroids=c.centroids, labels=c.labels, inertia=np.float64(c.inertia))
        _hook("cluster")
        self._mark("cluster")
        return c

    def _bandit(self, clustering: Clustering, warm: dict[str, np.ndarray]) -> UCB:
        cfg, plan = self.cfg, self.plan
        policy = UCB(plan.k, cfg.bandit.alpha, cfg.bandit.alpha_schedule)
        labels = clustering.labels
        warm_set = np.zeros(plan.n_docs, dtype=bool)
        warm_set[warm["indices"]] = True
        members = [m[~warm_set[m]] for m in clustering.members(cfg.seed)]

        if not self._done("warmup_written"):
            # The warm-up pairs enter the dataset (round 0) now that their clusters are known,
            # and initialise the arms of the clusters their documents fall in.
            recs = []
            for r in warm["records"]:
                rec = {k: v for k, v in r.items() if k != "doc_index"}
                rec["cluster"] = int(labels[r["doc_index"]])
                rec["round"] = 0
                recs.append(_dataset_record(rec))
            self.journals["dataset"].append(recs)
            init = self._init_arms(policy, labels, warm)
            self.ck["bandit"] = {"round": 0, "pointers": [0] * plan.k, "docs_used": int(len(warm["indices"])),
                                 "policy": policy.state(), "warmup_arms": init}
            self._mark("warmup_written")
        st = self.ck["bandit"]
        policy.load_state(st["policy"])
        pointers = np.asarray(st["pointers"], dtype=np.int64)
        sizes = np.array([len(m) for m in members], dtype=np.int64)
        remaining = plan.budget_docs - int(st["docs_used"])
        if not self._done("bandit"):
            with bar("bandit rounds (documents)", total=max(0, plan.budget_docs - plan.warmup_docs),
                     enabled=self.progress, postfix=self._extract_postfix) as tick:
                tick(int(st["docs_used"]) - plan.warmup_docs)
                while remaining > 0:
                    self._check_stop()
                    available = pointers < sizes
                    if not available.any():
                        self.say("every cluster is exhausted; stopping before the budget is spent")
                        break
                    scores = policy.scores()
                    arms = policy.choose(plan.clusters_per_round, available)
                    picks: list[tuple[int, np.ndarray]] = []
                    for arm in arms:
                        take = int(min(plan.docs_per_pull, remaining, sizes[arm] - pointers[arm]))
                        if take <= 0:
                            break
                        picks.append((arm, members[arm][pointers[arm]: pointers[arm] + take]))
                        remaining -= take
                    round_no = int(st["round"]) + 1
                    all_idx = np.concatenate([p for _, p in picks])
                    docs = self.corpus.get(all_idx)
                    results = self._extract(docs)
                    # one encode call for every pair of the round
                    texts = [p.text() for r in results for p in r.pairs]
                    vecs = self.embedder.encode(texts)
                    dataset_recs, round_recs = [], []
                    off_doc, off_pair = 0, 0
                    for arm, idx in picks:
                        arm_docs = docs[off_doc: off_doc + len(idx)]
                        arm_res = results[off_doc: off_doc + len(idx)]
                        off_doc += len(idx)
                        n_pairs = sum(len(r.pairs) for r in arm_res)
                        reward = self.scorer.reward(vecs[off_pair: off_pair + n_pairs])
                        off_pair += n_pairs
                        policy.update(arm, reward)
                        pointers[arm] += len(idx)
                        for d, r in zip(arm_docs, arm_res):
                            for p in r.pairs:
                                p.doc_id, p.cluster, p.round = d.id, arm, round_no
                                dataset_recs.append(_dataset_record(p.to_record()))
                        score = float(scores[arm])
                        round_recs.append(RoundRecord(round=round_no, cluster=arm, doc_ids=[d.id for d in arm_docs],
                                                      n_pairs=n_pairs, reward=float(reward),
                                                      score=score if math.isfinite(score) else None,
                                                      pulls=int(policy.pulls[arm])).to_record())
                    self.journals["dataset"].append(dataset_recs)
                    self.journals["rounds"].append(round_recs)
                    self.journals["bandit_vec"].append_bytes(vecs.tobytes())
                    _hook("round_appended")
                    st.update(round=round_no, pointers=pointers.tolist(), policy=policy.state(),
                              docs_used=int(st["docs_used"]) + len(all_idx))
                    self._commit()
                    _hook("round")
                    tick(len(all_idx))
            self._mark("bandit")
        return policy

    def _init_arms(self, policy: UCB, labels: np.ndarray, warm: dict[str, np.ndarray]) -> dict[str, Any]:
        """Give each cluster with warm-up documents one pseudo-pull per ``docs_per_pull`` documents,
        with the OT reward of those documents' pairs."""
        if len(warm["indices"]) == 0:
            return {"arms": 0}
        doc_cluster = labels[warm["indices"]]
        pair_cluster = labels[warm["pair_doc"]] if len(warm["pair_doc"]) else np.zeros(0, dtype=np.int32)
        arms = np.unique(doc_cluster)
        for j in arms:
            n_docs = int((doc_cluster == j).sum())
            pulls = max(1, int(round(n_docs / self.plan.docs_per_pull)))
            policy.update(int(j), self.scorer.reward(warm["vectors"][pair_cluster == j]), pulls=pulls)
        return {"arms": int(len(arms)), "pseudo_pulls": int(policy.pulls.sum())}

    def _extract_postfix(self) -> str:
        s = self.extractor.stats() if hasattr(self, "extractor") else {}
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

    def _finalize(self, clustering: Clustering, policy: UCB, reference) -> dict[str, Any]:
        t0 = time.perf_counter()
        dim = self.embedder.dim
        vecs = np.concatenate([
            np.fromfile(self.journals["warmup_vec"].path, dtype=np.float32).reshape(-1, dim),
            np.fromfile(self.journals["bandit_vec"].path, dtype=np.float32).reshape(-1, dim)])
        n_pairs = sum(1 for _ in read_jsonl(self.out / "dataset.jsonl"))
        cap = self.cfg.score.eval_max_pairs
        if len(vecs) > cap:
            vecs = vecs[np.sort(np.random.default_rng([self.cfg.seed, 0xE7A]).choice(len(vecs), cap, replace=False))]
        final_ot = self.scorer.distance(vecs) if len(vecs) else None
        bandit = self.ck.get("bandit", {})
        ex_stats = self.extractor.stats()
        seconds = self.ck.setdefault("stage_seconds", {})
        seconds["finalize"] = seconds.get("finalize", 0.0) + time.perf_counter() - t0
        summary = {
            "equal_version": __version__,
            "docs_total": self.plan.n_docs,
            "docs_extracted": int(bandit.get("docs_used", 0)),
            "docs_warmup": int(self.plan.warmup_docs),
            "docs_bandit": int(bandit.get("docs_used", 0)) - int(self.plan.warmup_docs),
            "pairs": n_pairs,
            "extraction_calls": int(ex_stats.get("calls", self.ck.get("extraction", {}).get("docs", 0))),
            "final_ot": final_ot,
            "rounds": int(bandit.get("round", 0)),
            "plan": self.plan.__dict__,
            "stage_seconds": {k: round(v, 3) for k, v in self.ck.get("stage_seconds", {}).items()},
            "skipped": {**dict(self.corpus.skipped),
                        **{f"extract_failed:{k}": v for k, v in self.ck.get("extraction", {}).get("failed", {}).items()}},
            "corpus_notes": dict(self.corpus.notes),
            "reference": {"items": len(reference.pairs), "skipped": dict(reference.skipped)},
            "extraction": self.ck.get("extraction", {}),
            "extractor": {"name": self.extractor.name, **ex_stats},
            "align": self.ck.get("align", {}),
            "warmup_arms": bandit.get("warmup_arms", {}),
            "arms": {"pulls": policy.pulls.tolist(),
                     "mean_reward": [None if not np.isfinite(m) else float(m) for m in policy.means()],
                     "sizes": np.bincount(clustering.labels, minlength=clustering.k).tolist()},
            "config": self.cfg.to_dict(),
        }
        atomic_write_json(self.out / "summary.json", summary)
        if self.cfg.report:
            try:
                from .report import write_report

                write_report(self.out)
            except Exception as e:  # a plot that fails must not cost the run
                log.warning("could not write the report: %s", e)
        self._mark("finalize")
        return summary


def _link_or_copy(src: Path, dst: Path) -> None:
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


def _dataset_record(rec: dict[str, Any]) -> dict[str, Any]:
    """Fixed field order for dataset.jsonl."""
    keys = ("question", "answer", "doc_id", "cluster", "round", "extractor", "rule")
    return {k: rec[k] for k in keys if k in rec}


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def run(cfg: Config, progress: bool = True, restart: bool = False, extractor: Extractor | None = None,
        messages: bool | None = None) -> RunResult:
    """Run EQUAL end to end into ``cfg.out`` (resuming what is there). See :class:`Pipeline`.

    ``progress`` shows progress bars; ``messages`` (default: same as ``progress``)
    prints status lines (resuming, finished) to stderr.
    """
    return Pipeline(cfg, progress=progress, restart=restart, extractor=extractor, messages=messages).run()
