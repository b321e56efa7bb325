"""Compose the stages into a run folder, with checkpoints so that a run can be killed and resumed.

The run folder is the API between commands::

    config.yaml      the effective config (a resumed run must match it)
    dataset.jsonl    every extracted pair with provenance (round 0 = warm-up)
    extracted.jsonl  every extracted document (round 0 = warm-up), pairs or not: the budget's audit
    rounds.jsonl     one line per bandit pull
    summary.json     counts, timings, skips, final OT, the LLM usage, the config
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
from typing import Any, Callable, Iterator

import numpy as np

from . import __version__
from .align import AlignExamples, apply_adapter, train_adapter, train_full
from .cluster import Clustering, kmeans
from .config import Config, result_fields_changed
from .corpus import Corpus, CorpusError
from .embed import Embedder, embed_by_length, embed_to_memmap, is_complete, make_embedder, map_rows
from .executors import cause_of, merge_stats
from .extract.base import EndpointDown, Extractor, SpendCapReached, make_extractor
from .hygiene import run_summary as hygiene_summary
from .io import (Journal, atomic_save_npy, atomic_save_npz, atomic_write_json, atomic_write_text, read_json,
                 read_jsonl)
from .progress import bar
from .reference import ReferenceError, load_reference
from .score import Scorer
from .select import recipe
from .select.envs import LiveEnv, PullResult
from .select.loop import LoopState, RoundResult, next_covariate, run_loop
from .select.policies import ArmStats
from .select.rewards import SelectedPool, make_reward
from .types import Document, Extraction, QAPair, RoundRecord

log = logging.getLogger("equal")


class RunError(RuntimeError):
    """A user-facing problem that stops a run before or during work (one line, no traceback)."""


class CapReached(RunError):
    """A hard spend cap (``extract.llm.max_cost`` / ``max_tokens_total``) stopped the run; it is saved
    like an interrupted one and resumes with a higher cap."""


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
        if recipe.is_ranking(cfg.policy):  # a document ranking: no warm-up, one arm walked in rank order
            if cfg.policy == "full":
                budget = n_docs
            return cls(n_docs=n_docs, budget_docs=budget, warmup_docs=0, k=1, clusters_per_round=1,
                       docs_per_pull=cfg.bandit.docs_per_pull * 5)
        warm = min(int(budget * cfg.align.warmup_fraction), cfg.align.warmup_max_docs)
        if cfg.cluster.k is not None:
            k = cfg.cluster.k
            if k > n_docs:
                raise RunError(f"cluster.k={k} is larger than the corpus ({n_docs} usable documents)")
        else:
            target = min(math.sqrt(n_docs), budget / 8)
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
    """Test-only: ``EQUAL_TEST_KILL_AT=name:n`` SIGKILLs this process at the n-th pass of point ``name``;
    ``name@s`` SIGKILLs it ``s`` seconds after the first pass of ``name`` (wherever it then is: a random
    moment inside a stage when ``name`` is the stage's ``<stage>_start``). Items are comma-separated."""
    spec = os.environ.get("EQUAL_TEST_KILL_AT")
    if not spec:
        return
    _HOOK_COUNTS[name] += 1
    for item in spec.split(","):
        if "@" in item:
            point, _, delay = item.partition("@")
            if point == name and _HOOK_COUNTS[name] == 1:
                import threading

                t = threading.Timer(float(delay), os.kill, (os.getpid(), signal.SIGKILL))
                t.daemon = True
                t.start()
            continue
        point, _, count = item.partition(":")
        if point == name and _HOOK_COUNTS[name] == int(count or 1):
            os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------- work counters
WORK_FILE = "work.jsonl"
#: What a process counts: corpus documents embedded, reference texts embedded, documents sent to the
#: extractor (cache hits included), OT computations (rewards, warm-up arm rewards, the final OT).
WORK_KINDS = ("embedded", "reference", "extracted", "scored")
_CHECKPOINTED_KINDS = ("extracted", "scored")  # committed with checkpoint.json (the others have their own files)


class WorkLog:
    """How much work each process of a run did, in ``state/work.jsonl`` (an audit log, never cut back).

    A process appends a ``start`` line (its number, pid, and the work already committed when it started,
    ``committed``), a ``work`` line right after each piece of work (an encode block, an extraction call,
    an OT computation), a ``stage`` line when a stage begins, and an ``exit`` line when it ends without
    being killed. Lines are single appends, so a SIGKILL loses at most the piece of work in progress (which
    was not committed either). The work a killed process did that was never committed is what its resume
    redid: ``work_log`` adds it up per process.
    """

    def __init__(self, state_dir: Path, committed: dict[str, Any]) -> None:
        self.path = state_dir / WORK_FILE
        self.process = sum(1 for r in _work_lines(self.path) if r.get("event") == "start")
        self.totals: Counter[str] = Counter()
        self.pending: Counter[str] = Counter()
        self._t0 = time.monotonic()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if self.path.stat().st_size and not _ends_with_newline(self.path):  # a torn last line stays apart
            os.write(self._fd, b"\n")
        self._write({"event": "start", "pid": os.getpid(), "committed": committed})

    def _write(self, rec: dict[str, Any]) -> None:
        if self._fd < 0:
            return
        line = json.dumps({"process": self.process, "t": round(time.monotonic() - self._t0, 3), **rec}) + "\n"
        os.write(self._fd, line.encode())

    def add(self, kind: str, n: int = 1) -> None:
        if n <= 0:
            return
        self.totals[kind] += int(n)
        self.pending[kind] += int(n)
        self._write({"event": "work", "kind": kind, "n": int(n)})

    def stage(self, name: str) -> None:
        self._write({"event": "stage", "stage": name})

    def commit_into(self, ck: dict[str, Any]) -> None:
        """Move the pending extraction and scoring counts into ``ck['work_committed']`` (about to be written)."""
        done = ck.setdefault("work_committed", {})
        for kind in _CHECKPOINTED_KINDS:
            done[kind] = int(done.get(kind, 0)) + self.pending.pop(kind, 0)

    def close(self, status: str) -> None:
        self._write({"event": "exit", "status": status, "totals": {k: self.totals.get(k, 0) for k in WORK_KINDS}})
        os.close(self._fd)
        self._fd = -1


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _work_lines(path: Path) -> Iterator[dict[str, Any]]:
    """The complete, readable lines of a work log (a torn one is skipped)."""
    if not path.exists():
        return
    with open(path, "rb") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and "process" in rec:
                yield rec


def work_log(run_dir: str | Path) -> list[dict[str, Any]]:
    """Per process of the run in ``run_dir`` (in order): ``process``, ``pid``, ``committed`` (work already
    committed when it started), the work it did (``embedded``, ``reference``, ``extracted``, ``scored``),
    ``stages`` (the stages it entered, in order), ``exit`` (its status, None when it was killed)."""
    procs: dict[int, dict[str, Any]] = {}
    for r in _work_lines(Path(run_dir) / "state" / WORK_FILE):
        p = procs.setdefault(int(r["process"]), {"process": int(r["process"]), "pid": None, "committed": {},
                                                 **{k: 0 for k in WORK_KINDS}, "stages": [], "exit": None})
        ev = r.get("event")
        if ev == "start":
            p["pid"], p["committed"] = r.get("pid"), r.get("committed", {})
        elif ev == "work":
            p[r["kind"]] = p.get(r["kind"], 0) + int(r["n"])
        elif ev == "stage":
            p["stages"].append(r["stage"])
        elif ev == "exit":
            p["exit"] = r.get("status")
    return [procs[i] for i in sorted(procs)]


# ---------------------------------------------------------------- LLM usage
USAGE_FILE = "llm_usage.json"
_USAGE_KEYS = ("calls", "refine_calls", "prompt_tokens", "completion_tokens")


def _usage_of(stats: dict[str, Any]) -> dict[str, int]:
    """Requests and tokens paid for, from an extractor's stats (refinement included in the tokens)."""
    g = lambda k: int(stats.get(k) or 0)  # noqa: E731
    return {"calls": g("calls"), "refine_calls": g("refine_calls"),
            "prompt_tokens": g("prompt_tokens") + g("refine_prompt_tokens"),
            "completion_tokens": g("completion_tokens") + g("refine_completion_tokens")}


def llm_usage(run_dir: str | Path, cfg: Config | None = None) -> dict[str, Any]:
    """What the run in ``run_dir`` paid for, over all its processes: ``calls``, ``refine_calls``,
    ``prompt_tokens``, ``completion_tokens`` (from the responses' usage; cache hits cost nothing),
    ``total_tokens`` and ``cost`` (at ``cfg``'s prices; None without prices or ``cfg``)."""
    rec = read_json(Path(run_dir) / "state" / USAGE_FILE, {}) or {}
    out: dict[str, Any] = {k: int(rec.get(k, 0)) for k in _USAGE_KEYS}
    out["total_tokens"] = out["prompt_tokens"] + out["completion_tokens"]
    cost = None
    if cfg is not None:
        from .extract.llm import spend_cost

        cost = spend_cost(out["prompt_tokens"], out["completion_tokens"], cfg.extract.llm)
    out["cost"] = cost
    return out


# ---------------------------------------------------------------- the run
class Pipeline:
    """One run of EQUAL: ``Pipeline(cfg).run()``.

    Stages: index → reference → embed → warm-up extraction → align → cluster →
    selection rounds → finalize. Each stage records completion in
    ``state/checkpoint.json``; an interrupted stage resumes from its last
    complete unit (embedding chunk, warm-up batch, selection round). The
    choices themselves (warm-up rows, arms, priors, the loop) are the
    functions of :mod:`equal.select`, shared with replays.
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
        self._exec = None

    # ------------------------------------------------------------ helpers
    def say(self, msg: str) -> None:
        self.notices.append(msg)
        log.info(msg)
        if self.messages:
            print(msg, file=sys.stderr, flush=True)

    @property
    def executor(self):
        """Where the per-document stages run (``executor``: local or ray); started on first use."""
        if self._exec is None:
            from .executors import ExecutorError, make_executor

            try:
                self._exec = make_executor(self.cfg, progress=self.progress, say=self.say)
            except ExecutorError as e:
                raise RunError(str(e)) from None
        return self._exec

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
                print(f"\\nequal: signal {signum} received, finishing the current unit of work and saving ...",
                      file=sys.stderr, flush=True)

            old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for s, h in old.items():
                    signal.signal(s, h)
        else:
            yield

    def _stage(self, stage: str) -> None:
        """A stage begins: logged in the work log; test kill point ``<stage>_start``."""
        if getattr(self, "work", None) is not None:
            self.work.stage(stage)
        _hook(f"{stage}_start")

    @contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        self._stage(stage)
        t = time.perf_counter()
        try:
            yield
        finally:
            self.ck.setdefault("stage_seconds", {})
            self.ck["stage_seconds"][stage] = self.ck["stage_seconds"].get(stage, 0.0) + time.perf_counter() - t

    def _commit(self) -> None:
        """Record journal sizes and loop state atomically: the single point of truth for resume."""
        self.ck["journals"] = {name: j.size() for name, j in self.journals.items()}
        if getattr(self, "work", None) is not None:
            self.work.commit_into(self.ck)
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

            for name in ("dataset.jsonl", "rounds.jsonl", "extracted.jsonl", "summary.json", "report.md",
                         "config.yaml", "report.html", "hygiene_dropped.jsonl"):
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
            "extracted": Journal(self.out / "extracted.jsonl"),
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
        self.work = WorkLog(self.state_dir, self._committed_work())
        status = "error"
        with self._signals():
            try:
                result = self._run_stages(resumed)
                status = "finished"
                return result
            except Interrupted:
                status = "interrupted"
                raise
            except CapReached:
                status = "capped"
                raise
            finally:
                if self._extractor is not None:
                    self._extractor.close()
                if self._exec is not None:
                    self._exec.close()
                    self._exec = None
                self.work.close(status)

    def _committed_work(self) -> dict[str, Any]:
        """The work whose results are committed (what a resume will not redo), for the work log."""
        rows = 0
        for name in ("doc_vectors.npy", "doc_vectors_full.npy"):
            prog = read_json(self.state_dir / (name + ".progress.json"), {}) or {}
            rows += int(prog.get("rows", 0))
        ref = 0
        if (self.state_dir / "reference.npz").exists():
            with np.load(self.state_dir / "reference.npz") as z:
                ref = int(len(z["reward"]) + len(z["prior"]))
        else:  # chunks of the reference samples embedded so far
            for name in ("reference_reward.npy", "reference_prior.npy"):
                prog = read_json(self.state_dir / (name + ".progress.json"), {}) or {}
                ref += int(prog.get("rows", 0))
        done = self.ck.get("work_committed", {})
        return {"embedded": rows, "reference": ref, **{k: int(done.get(k, 0)) for k in _CHECKPOINTED_KINDS},
                "done": list(self.ck.get("done", []))}

    def _run_stages(self, resumed: bool) -> RunResult:
        cfg = self.cfg
        with self._timed("index"):
            try:
                corpus = Corpus(cfg.corpus, cfg.corpus_options, index_dir=self.state_dir, progress=self.progress)
            except CorpusError as e:
                raise RunError(str(e)) from None
            _hook("index")
            try:
                reference = load_reference(cfg.reference)
            except ReferenceError as e:
                raise RunError(str(e)) from None
        plan = Plan.make(cfg, len(corpus))
        self.corpus, self.plan, self.reference = corpus, plan, reference
        self.ck["plan"] = plan.__dict__
        if not resumed:
            if recipe.is_ranking(cfg.policy):
                self.say(f"corpus: {len(corpus)} documents; budget {plan.budget_docs} extractions; "
                         f"policy {cfg.policy} (a document ranking, no clusters)")
            else:
                self.say(f"corpus: {len(corpus)} documents; budget {plan.budget_docs} extractions "
                         f"({plan.warmup_docs} warm-up); k={plan.k}, {plan.clusters_per_round} cluster(s) x "
                         f"{plan.docs_per_pull} docs per round; policy {cfg.policy}")
        self._extractor_from_config = self._extractor is None  # Ray workers can make the same one
        if self._extractor is None:
            self._extractor = make_extractor(cfg.extract)
        self.extractor = self._extractor
        self._start_usage()
        if recipe.align_mode(cfg.policy, cfg.align.mode) == "full" and _is_static(cfg.embed.model):
            raise RunError("align.mode full fine-tunes a transformer; a static embedder works with align.mode "
                           "adapter (or none)")
        with self._timed("load_embedder"):
            self.embedder = make_embedder(cfg.embed.model, cfg.embed.batch_size, cfg.embed.max_seq_length,
                                          cfg.embed.device, cache_root(cfg), self.progress, self.say)
        with self._timed("reference"):
            ref_vecs, prior_vecs = self._reference_vectors(reference.pairs)
        self.scorer = Scorer(ref_vecs, self.embedder.encode, cfg.score.metric, cfg.score.method, cfg.score.sinkhorn_reg)
        self.scorer.distance = self._counted_distance(self.scorer.distance)
        self.env = LiveEnv(self.corpus.get, self._extract, self.embedder.encode_each, self.embedder.dim)

        with self._timed("embed"):
            base = self._embed_corpus(self.embedder, "doc_vectors.npy")
            self._mark("embed")
        base_similarity = recipe.Similarities(base, prior_vecs, cfg.bandit.similarity_k)
        self.sim, self.mean_sim = base_similarity(cfg.bandit.similarity), base_similarity("mean")
        self.warm_sim = warmup_similarity(cfg, self.sim, base_similarity)
        self._check_stop()
        with self._timed("warmup"):
            warm = self._warmup()
        self._check_stop()
        with self._timed("align"):
            vectors = self._align(warm, base)
            adapter = self.state_dir / "adapter.npy"
            W = np.load(adapter) if adapter.exists() and vectors is not base else None
            self.arm_sim = arm_similarity(cfg, vectors, self.sim, prior_vecs, W)
            self.prior_sim = prior_similarity(cfg, vectors, self.arm_sim, prior_vecs, W, base_similarity)
        self._check_stop()
        with self._timed("cluster"):
            clustering = self._cluster(vectors)
        del vectors, base
        with self._timed("bandit"):
            policy = self._select(clustering, warm)
        summary = self._finalize(clustering, policy, reference)
        return RunResult(self.out, summary, resumed=resumed)

    # ------------------------------------------------------------ stages
    def _reference_vectors(self, pairs: list[QAPair]) -> tuple[np.ndarray, np.ndarray]:
        """The reward sample and the prior sample of the reference, embedded (see :func:`reference_vectors`)."""
        path = self.state_dir / "reference.npz"
        if path.exists():
            z = np.load(path)
            return z["reward"], z["prior"]
        encode, on_chunk = self._counted(self.embedder.encode, "reference", "reference")
        share = None
        if self.cfg.embed.cache:
            fp = self.embedder.fingerprint()
            share = (lambda digest: embed_cache_file(self.cfg, reference_key(digest, fp, self.cfg)), self.say)
        reward, prior = reference_vectors(encode, pairs, self.cfg, store=self.state_dir, dim=self.embedder.dim,
                                          on_chunk=on_chunk, progress=self.progress, share=share)
        _hook("reference")
        atomic_save_npz(path, reward=reward, prior=prior)
        for name in ("reward", "prior"):  # reference.npz holds them now
            for f in (f"reference_{name}.npy", f"reference_{name}.npy.progress.json"):
                (self.state_dir / f).unlink(missing_ok=True)
        return reward, prior

    def _counted_distance(self, distance):
        def counted(vectors: np.ndarray) -> float:
            d = distance(vectors)
            self.work.add("scored")
            return d
        return counted

    def _start_usage(self) -> None:
        """Read what earlier processes of the run paid for (``state/llm_usage.json``) and tell the extractor,
        so that the spend caps count the whole run."""
        self._usage_base = {k: int(v) for k, v in llm_usage(self.out).items() if k in _USAGE_KEYS}
        self._usage_t0 = _usage_of(self.extractor.stats())
        self._usage_last = dict(self._usage_base)
        if hasattr(self.extractor, "spend_base"):
            self.extractor.spend_base = (
                self._usage_base["prompt_tokens"] - self._usage_t0["prompt_tokens"],
                self._usage_base["completion_tokens"] - self._usage_t0["completion_tokens"])

    def _record_usage(self) -> None:
        """Write the run's paid usage (earlier processes plus this one) when it changed. Written after every
        extraction call, whether or not its batch is committed: tokens are paid when the responses arrive
        (a resumed batch gets the finished documents from the cache, at no cost)."""
        now = _usage_of(self.extractor.stats())
        total = {k: self._usage_base[k] + now[k] - self._usage_t0[k] for k in _USAGE_KEYS}
        if total != self._usage_last:
            atomic_write_json(self.state_dir / USAGE_FILE, total)
            self._usage_last = total

    def _extract(self, docs: list[Document]) -> list[Extraction]:
        try:
            results = self.extractor.extract(docs)
        except (EndpointDown, SpendCapReached) as e:
            raise _stop_error(e) from None
        finally:
            self._record_usage()
        self.work.add("extracted", len(docs))
        if len(results) != len(docs):
            raise RuntimeError(f"extractor returned {len(results)} results for {len(docs)} documents")
        self._count_extractions(results)
        return results

    def _count_extractions(self, results: list[Extraction]) -> None:
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

    def _extracted_records(self, res: PullResult, round_no: int) -> list[dict[str, Any]]:
        return [{"doc_id": d, "round": round_no, "n_pairs": int(n), "status": s}
                for d, n, s in zip(res.doc_ids, res.n_pairs, res.status)]

    def _warmup(self) -> dict[str, Any]:
        """Extract the warm-up sample in checkpointed batches. Returns pair vectors and their doc rows."""
        plan, cfg = self.plan, self.cfg
        idx = recipe.warmup_rows(plan.n_docs, plan.warmup_docs, cfg.seed, cfg.align.warmup_sampling,
                                 self.warm_sim, cfg.align.warmup_pool_factor)
        done = int(self.ck.get("warmup_docs_done", 0))
        if not self._done("warmup"):
            with bar("warm-up extraction", total=len(idx), enabled=self.progress,
                     postfix=self._extract_postfix) as tick:
                tick(done)
                for s, res in zip(range(done, len(idx), cfg.extract.batch_docs), self._warmup_pulls(idx[done:])):
                    batch = res.rows
                    recs = [{**p.to_record(), "doc_index": int(row)}
                            for row, pairs in zip(res.rows, res.pairs) for p in pairs]
                    self.journals["warmup"].append(recs)
                    self.journals["warmup_vec"].append_bytes(res.vectors.tobytes())
                    self.journals["extracted"].append(self._extracted_records(res, 0))
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

    def _warmup_pulls(self, rows: np.ndarray) -> Iterator[PullResult]:
        """The warm-up's batches of ``extract.batch_docs`` documents, extracted in order: here, or (executor ray,
        at least ``ray.min_extract_docs`` documents left, the extractor made from the config) by Ray workers."""
        bd = self.cfg.extract.batch_docs
        remote = (self.cfg.executor != "local" and len(rows) >= max(1, self.cfg.ray.min_extract_docs)
                  and self._extractor_from_config)
        if not remote:
            for s in range(0, len(rows), bd):
                self._check_stop()
                yield self.env.pull(rows[s: s + bd])
            return
        self._check_stop()
        try:
            for p in self.executor.extract(self.corpus, rows, bd, self.extractor, self.embedder):
                self.work.add("extracted", len(p.result))
                self._count_extractions(p.outcomes)
                remote_stats = self.ck.setdefault("remote_extractor_stats", {})
                self.ck["remote_extractor_stats"] = merge_stats(remote_stats, p.stats)
                yield p.result
                self._check_stop()
        except Exception as e:  # a worker's stop comes back wrapped by Ray
            err = _stop_error(e)
            if err is not None:
                raise err from None
            raise

    def _counted(self, encode, kind: str, point: str):
        """``encode`` that counts its texts as work ``kind`` and passes the test kill point
        ``<point>_block``, and a chunk callback (``<point>_chunk``) where a signal may stop the run."""
        def counted(texts):
            out = encode(texts)
            self.work.add(kind, len(texts))
            _hook(f"{point}_block")
            return out

        def on_chunk(start: int, stop: int) -> None:  # noqa: ARG001 - the chunk is committed
            _hook(f"{point}_chunk")
            self._check_stop()
        return counted, on_chunk

    def _embed_corpus(self, embedder: Embedder, name: str) -> np.ndarray:
        encode, on_chunk = self._counted(embedder.encode, "embedded", "embed")
        self._check_stop()
        encode_blocks = None
        if self.cfg.executor != "local":
            def encode_blocks(spans):  # the blocks as they come back, counted as the local path counts them
                # the executor starts (Ray with it) when a first block is due, not for an embedding already there
                remote = self.executor.encode_blocks(self.corpus, embedder)
                for (b, e), vecs in zip(spans, remote(spans)):
                    self.work.add("embedded", e - b)
                    _hook("embed_block")
                    yield vecs
        return embed_corpus(self.corpus, embedder, self.state_dir / name, self.cfg, encode=encode,
                            share=embedder is self.embedder, progress=self.progress, say=self.say,
                            on_chunk=on_chunk, encode_blocks=encode_blocks)

    def _align(self, warm: dict[str, Any], base: np.ndarray) -> np.ndarray:
        """The vectors to cluster: the base ones, adapter-mapped ones, or a fully tuned embedder's."""
        cfg = self.cfg
        mode = recipe.align_mode(cfg.policy, cfg.align.mode)
        if mode == "none" or len(warm["indices"]) == 0:
            return base
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
            if not (model_dir / "config.json").exists():
                return base
            aligned = Embedder(str(model_dir), cfg.embed.batch_size, cfg.embed.max_seq_length, cfg.embed.device)
            vectors = self._embed_corpus(aligned, "doc_vectors_full.npy")
            self._mark("embed_full")
            return vectors
        aligned_path = self.state_dir / "doc_vectors_aligned.npy"
        if not self._done("align"):
            W, stats = align_adapter(base, warm, cfg)
            atomic_save_npy(self.state_dir / "adapter.npy", W)
            self.ck["align"] = stats
            map_rows(base, aligned_path, apply_adapter(W))
            _hook("align")
            self._mark("align")
        return np.load(aligned_path, mmap_mode="r")

    def _cluster(self, vectors: np.ndarray) -> Clustering:
        path = self.state_dir / "clusters.npz"
        if self._done("cluster") and path.exists():
            z = np.load(path)
            return Clustering(centroids=z["centroids"], labels=z["labels"], inertia=float(z["inertia"]))
        if recipe.is_ranking(self.cfg.policy):
            c = Clustering(centroids=np.asarray(vectors[:0].sum(0, keepdims=True), np.float32),
                           labels=np.zeros(len(vectors), dtype=np.int32), inertia=0.0)
        else:
            cc = self.cfg.cluster
            c = kmeans(vectors, self.plan.k, cc.niter, self.cfg.seed, cc.max_points_per_centroid, cc.nredo,
                       assign_fn=self.executor.assign if self.cfg.executor != "local" else None)
        atomic_save_npz(path, centroids=c.centroids, labels=c.labels, inertia=np.float64(c.inertia))
        _hook("cluster")
        self._mark("cluster")
        return c

    def _ranking(self) -> np.ndarray:
        path = self.state_dir / "ranking.npy"
        if path.exists():
            return np.load(path)
        cfg = self.cfg
        order = recipe.ranking_order(
            cfg.policy, self.plan.n_docs, cfg.seed, sim=self.mean_sim,
            doc_vecs=np.load(self.state_dir / "doc_vectors.npy", mmap_mode="r"),
            ref_vecs=np.load(self.state_dir / "reference.npz")["prior"],
            doc_texts=lambda: _LazyTexts(self.corpus), ref_texts=[p.text() for p in self.reference.pairs],
            n=self.plan.budget_docs)
        atomic_save_npy(path, order)
        return order

    def _select(self, clustering: Clustering, warm: dict[str, Any]) -> ArmStats:
        cfg, plan = self.cfg, self.plan
        policy = recipe.make_policy(cfg.policy, plan.k, cfg.bandit.alpha, cfg.bandit.alpha_schedule,
                                    cfg.bandit.epsilon, cfg.bandit.thompson_sigma)
        labels = clustering.labels
        if recipe.is_ranking(cfg.policy):
            members = [self._ranking()]
        else:
            members = recipe.arm_members(labels, plan.k, warm["indices"], cfg.seed, cfg.bandit.in_cluster,
                                         self.arm_sim)
        reward = make_reward(cfg.bandit.reward, self.scorer)
        pool = SelectedPool(self.embedder.dim, cfg.bandit.reward_pool, cfg.seed)
        pool.add(warm["vectors"])

        if not self._done("warmup_written"):
            self._stage("warmup_written")
            # The warm-up pairs enter the dataset (round 0) now that their clusters are known,
            # and initialise the arms of the clusters their documents fall in.
            recs = []
            for r in warm["records"]:
                rec = {k: v for k, v in r.items() if k != "doc_index"}
                rec["cluster"] = int(labels[r["doc_index"]])
                rec["round"] = 0
                recs.append(_dataset_record(rec))
            self.journals["dataset"].append(recs)
            init = init_policy(policy, cfg, plan, labels, warm, members, self.prior_sim, self.scorer)
            self.ck["bandit"] = {**LoopState(round=0, docs_used=int(len(warm["indices"])),
                                             pointers=[0] * len(members), policy=policy.state_dict()).to_dict(),
                                 "warmup_arms": init}
            _hook("warmup_written_appended")
            self._mark("warmup_written")
        st = self.ck["bandit"]
        if int(st["round"]) > 0:  # rebuild the pool of selected pairs from the committed journal
            pool.add(np.fromfile(self.journals["bandit_vec"].path, dtype=np.float32).reshape(-1, self.embedder.dim))
        if not self._done("bandit"):
            self._stage("rounds")
            bandit_total = max(0, plan.budget_docs - plan.warmup_docs)
            with bar("selection rounds (documents)", total=bandit_total, enabled=self.progress,
                     postfix=self._extract_postfix) as tick:
                tick(int(st["docs_used"]) - plan.warmup_docs)

                def on_round(rr: RoundResult, state: LoopState) -> None:
                    self._write_round(rr)
                    _hook("round_appended")
                    self.ck["bandit"].update(state.to_dict())
                    self._commit()
                    _hook("round")
                    tick(rr.docs)

                final = run_loop(policy, self.env, reward, members, plan.budget_docs, plan.clusters_per_round,
                                 plan.docs_per_pull, LoopState.from_dict(st), pool, cfg.seed, on_round=on_round,
                                 check_stop=self._check_stop,
                                 cost=length_cost(self.corpus) if cfg.bandit.cost_aware else None,
                                 covariate=tracking_covariate(cfg, self.prior_sim))
                if final.docs_used < plan.budget_docs:
                    self.say("every cluster is exhausted; stopping before the budget is spent")
            self._mark("bandit")
        policy.load_state_dict(self.ck["bandit"]["policy"])
        return policy

    def _write_round(self, rr: RoundResult) -> None:
        dataset_recs, round_recs, extracted, vecs = [], [], [], []
        for ap in rr.pulls:
            res = ap.result
            for pairs in res.pairs:
                for p in pairs:
                    p.cluster, p.round = ap.arm, rr.round
                    dataset_recs.append(_dataset_record(p.to_record()))
            round_recs.append(RoundRecord(round=rr.round, cluster=ap.arm, doc_ids=list(res.doc_ids),
                                          n_pairs=int(res.n_pairs.sum()), reward=float(ap.reward),
                                          score=ap.score, pulls=ap.pulls).to_record())
            extracted.extend(self._extracted_records(res, rr.round))
            vecs.append(res.vectors)
        self.journals["dataset"].append(dataset_recs)
        self.journals["rounds"].append(round_recs)
        self.journals["extracted"].append(extracted)
        self.journals["bandit_vec"].append_bytes(np.concatenate(vecs).astype(np.float32).tobytes())

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

    def _finalize(self, clustering: Clustering, policy: ArmStats, reference) -> dict[str, Any]:
        self._stage("finalize")
        t0 = time.perf_counter()
        dim = self.embedder.dim
        vecs = np.concatenate([
            np.fromfile(self.journals["warmup_vec"].path, dtype=np.float32).reshape(-1, dim),
            np.fromfile(self.journals["bandit_vec"].path, dtype=np.float32).reshape(-1, dim)])
        n_pairs = sum(1 for _ in read_jsonl(self.out / "dataset.jsonl"))
        n_extracted = sum(1 for _ in read_jsonl(self.out / "extracted.jsonl"))
        cap = self.cfg.score.eval_max_pairs
        if len(vecs) > cap:
            vecs = vecs[np.sort(np.random.default_rng([self.cfg.seed, 0xE7A]).choice(len(vecs), cap, replace=False))]
        final_ot = self.scorer.distance(vecs) if len(vecs) else None
        bandit = self.ck.get("bandit", {})
        ex_stats = merge_stats(self.extractor.stats(), self.ck.get("remote_extractor_stats", {}))
        seconds = self.ck.setdefault("stage_seconds", {})
        seconds["finalize"] = seconds.get("finalize", 0.0) + time.perf_counter() - t0
        summary = {
            "equal_version": __version__,
            "policy": self.cfg.policy,
            "docs_total": self.plan.n_docs,
            "docs_extracted": n_extracted,
            "docs_warmup": int(self.plan.warmup_docs),
            "docs_bandit": n_extracted - int(self.plan.warmup_docs),
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
            "llm_usage": llm_usage(self.out, self.cfg),
            "align": self.ck.get("align", {}),
            "warmup_arms": bandit.get("warmup_arms", {}),
            "arms": {"pulls": policy.pulls.tolist(),
                     "mean_reward": [None if not np.isfinite(m) else float(m) for m in _real_means(policy)],
                     "sizes": np.bincount(clustering.labels, minlength=clustering.k).tolist()},
            "config": self.cfg.to_dict(),
            "work": work_log(self.out),
            "hygiene": hygiene_summary(self.out, self.cfg.hygiene),  # what exports keep; dataset.jsonl keeps all
        }
        atomic_write_json(self.out / "summary.json", summary)
        _hook("summary")
        if self.cfg.report:
            self._stage("report")
            try:
                from .report import write_report

                write_report(self.out)
            except Exception as e:  # a plot that fails must not cost the run
                log.warning("could not write the report: %s", e)
        _hook("finalize")
        self._mark("finalize")
        return summary


def length_cost(corpus: Corpus):
    """For cost-aware pulls: a pull's mean document length relative to the corpus mean (first 2,000 documents)."""
    mean_len = float(np.mean([len(d.text) for d in corpus.get(range(min(len(corpus), 2000)))]))

    def cost(res: PullResult) -> float:
        if len(res) == 0:
            return 1.0
        return float(np.mean([len(d.text) for d in corpus.get(res.rows)])) / mean_len
    return cost


def _real_means(policy: ArmStats) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(policy.pulls > 0, policy.sums / np.maximum(policy.pulls, 1), np.nan)


class _LazyTexts:
    """The corpus texts as a sequence, read in order (for rankers that stream text, e.g. DSIR)."""

    def __init__(self, corpus: Corpus) -> None:
        self.corpus = corpus

    def __len__(self) -> int:
        return len(self.corpus)

    def __iter__(self):
        for batch in self.corpus.iter_batches(4096):
            for d in batch:
                yield d.text

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [d.text for d in self.corpus.get(range(*i.indices(len(self.corpus))))]
        return self.corpus.get([i])[0].text


def _stop_error(e: BaseException) -> RunError | None:
    """The one-line error for an extraction that stopped the run, raised here or wrapped by a Ray worker: the
    endpoint is down (:class:`RunError`) or a spend cap was reached (:class:`CapReached`); None for any other."""
    down = cause_of(e, EndpointDown)
    if down is not None:
        return RunError(f"{down} — everything extracted so far is saved; run the same command again to resume")
    cap = cause_of(e, SpendCapReached)
    if cap is not None:
        key = getattr(cap, "key", "") or "extract.llm.max_cost"
        return CapReached(f"{cap}. The run stopped before spending more; everything extracted so far is saved. "
                          f"Raise the cap (--set {key}=...) and run the same command again to resume")
    return None


def cache_root(cfg: Config) -> Path:
    """The cache root: ``extract.cache_dir``, else ``$XDG_CACHE_HOME/equal`` (extractions, shared corpus
    embeddings, the distilled static model)."""
    from .extract.cache import default_cache_dir

    return Path(cfg.extract.cache_dir) if cfg.extract.cache_dir else default_cache_dir()


def _is_static(model: str) -> bool:
    from .embed import STATIC, is_model2vec

    return model == STATIC or is_model2vec(model)


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
            _link_or_copy(shared, path)
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
            _link_or_copy(path, shared)
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


def arm_similarity(cfg: Config, vectors: np.ndarray, base_sim: np.ndarray, prior_vecs: np.ndarray,
                   W: np.ndarray | None) -> np.ndarray:
    """The similarity that orders documents inside arms and sets arm priors: the base one, or (with
    ``bandit.similarity_space: aligned`` and an adapter) cosine in the aligned space, where documents sit
    near the pairs they yield, to the adapter-mapped reference. Shared with replays."""
    if cfg.bandit.similarity_space != "aligned" or W is None:
        return base_sim
    return recipe.similarity_scores(vectors, apply_adapter(W)(prior_vecs), cfg.bandit.similarity,
                                    cfg.bandit.similarity_k)


def align_adapter(base: np.ndarray, warm: dict[str, Any], cfg: Config) -> tuple[np.ndarray, dict]:
    """Train the InfoNCE adapter on the warm-up's (document, pair) examples (shared with replays)."""
    ex = AlignExamples.from_pair_docs(warm["pair_doc"], cfg.align.max_pairs, cfg.seed)
    doc_vecs = np.asarray(base[ex.doc_rows]) if len(ex) else np.zeros((0, base.shape[1]), np.float32)
    local = AlignExamples(doc_rows=np.arange(len(ex)), pair_groups=ex.pair_groups)
    return train_adapter(doc_vecs, warm["vectors"], local, cfg.align, cfg.seed, progress=False)


def warmup_similarity(cfg: Config, sim: np.ndarray, similarity: Callable[[str], np.ndarray]) -> np.ndarray:
    """The similarity that ranks the targeted warm-up's pool: ``align.warmup_similarity`` read in the base space
    by ``similarity(kind)``, or ``sim`` (that of ``bandit.similarity``) where it is None or the same. Shared with
    replays."""
    kind = cfg.align.warmup_similarity
    return sim if kind is None or kind == cfg.bandit.similarity else similarity(kind)


def prior_similarity(cfg: Config, vectors: np.ndarray, arm_sim: np.ndarray, prior_vecs: np.ndarray,
                     W: np.ndarray | None, similarity: Callable[[str], np.ndarray]) -> np.ndarray:
    """The similarity the arm priors read (tracking covariate, similarity prior): ``arm_sim`` unless
    ``bandit.prior_similarity`` names another kind, then that kind where :func:`arm_similarity` measures (the
    aligned space, or the base one through ``similarity(kind)``). Shared with replays."""
    kind = cfg.bandit.prior_similarity
    if kind is None or kind == cfg.bandit.similarity:
        return arm_sim
    if cfg.bandit.similarity_space == "aligned" and W is not None:
        return recipe.similarity_scores(vectors, apply_adapter(W)(prior_vecs), kind, cfg.bandit.similarity_k)
    return similarity(kind)


def tracking_covariate(cfg: Config, sim: np.ndarray | None) -> np.ndarray | None:
    """The per-document covariate the loop feeds a tracking prior (None: no tracking prior)."""
    if recipe.is_ranking(cfg.policy) or cfg.bandit.prior != "tracking":
        return None
    return sim


def init_policy(policy: ArmStats, cfg: Config, plan: Plan, labels: np.ndarray, warm: dict[str, Any],
                members: list[np.ndarray], sim: np.ndarray, scorer: Scorer) -> dict[str, Any]:
    """Start the arms from the warm-up (pseudo-pulls with the OT reward of each arm's warm-up pairs)
    and, where configured, from the zero-cost similarity prior. Shared with replays."""
    if recipe.is_ranking(cfg.policy):
        return {"arms": 0}
    info: dict[str, Any] = {"arms": 0}
    wa = None
    if cfg.bandit.prior == "tracking":
        policy.track(next_covariate(members, np.zeros(len(members)), sim, plan.docs_per_pull),
                     cfg.bandit.prior_pulls)
    if len(warm["indices"]):
        wa = recipe.warmup_arm_rewards(labels, plan.k, warm["indices"], warm["pair_doc"], warm["vectors"],
                                       scorer.reward, plan.docs_per_pull)
        warm_rows = np.asarray(warm["indices"])
        for j in np.flatnonzero(wa.docs):
            x = float(np.mean(sim[warm_rows[labels[warm_rows] == j]]))
            policy.update(int(j), float(wa.reward[j]), pulls=int(wa.pseudo_pulls[j]), x=x)
        info = {"arms": int((wa.docs > 0).sum()), "pseudo_pulls": int(wa.pseudo_pulls.sum())}
    if cfg.bandit.prior == "tracking":
        a, b = policy.calibration()
        info["prior"] = {"kind": "tracking", "a": a, "b": b}
    elif cfg.bandit.prior == "similarity":
        prior = recipe.arm_prior(members, sim, wa, labels, warm["indices"], plan.docs_per_pull)
        policy.set_prior(prior, cfg.bandit.prior_pulls)
        info["prior"] = {"min": float(prior.min()), "max": float(prior.max())}
    return info


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
