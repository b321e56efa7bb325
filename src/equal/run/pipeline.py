"""One live run of EQUAL, in order: ``Pipeline(cfg).run()``.

index → reference → embed → (the recipe: warm-up → align → cluster → the arms' start) → rounds → finalize.
The stages are the functions of :mod:`equal.run.stages`; the recipe's order is
:func:`equal.select.setup.build_selection`, shared with replays. This module owns only the order, the folder's
life (lock, prepare, close), signals and the status lines.
"""

from __future__ import annotations

import logging
import shutil
import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..config import Config
from ..corpus import Corpus
from ..embed import from_config as embedder_from_config
from ..embed import is_static
from ..errors import EqualError, Interrupted, UserError
from ..extract.base import Extractor
from ..extract.registry import make_extractor
from ..io import read_json
from ..layout import check_files
from ..reference import load_reference
from ..score import Scorer
from ..select import recipe
from ..select.envs import LiveEnv
from ..select.registry import align_mode, check_policy, is_ranking
from ..select.setup import Inputs, build_selection
from ..sizing import Plan, clamp_notice
from ..vectors import cache_root
from .finalize import finalize_stage
from .folder import RunFolder
from .killpoints import killpoint
from .stages import (CapReached, Extraction_, LiveSteps, Run, embed_stage, reference_stage, rounds_stage)
from .worklog import WorkLog, committed_work

log = logging.getLogger("equal")


@dataclass
class RunResult:
    out: Path
    summary: dict[str, Any]
    resumed: bool = False
    already_finished: bool = False

    @property
    def dataset_path(self) -> Path:
        return self.out / "dataset.jsonl"


class Pipeline:
    """One run of EQUAL: ``Pipeline(cfg).run()``. Each stage records completion in ``state/checkpoint.json``;
    an interrupted stage resumes from its last complete unit (embedding chunk, warm-up batch, round)."""

    def __init__(self, cfg: Config, progress: bool = True, restart: bool = False,
                 extractor: Extractor | None = None, messages: bool | None = None) -> None:
        self.cfg = cfg
        self.progress = progress
        self.messages = progress if messages is None else messages
        self.restart = restart
        self.extractor = extractor
        self.folder = RunFolder(cfg.out)
        self.notices: list[str] = []
        self._stop_signal: int | None = None
        self._exec = None

    @property
    def out(self) -> Path:
        return self.folder.out

    def say(self, msg: str) -> None:
        self.notices.append(msg)
        log.info(msg)
        if self.messages:
            print(msg, file=sys.stderr, flush=True)

    def _executor(self):
        """Where the per-document stages run (``executor``: local or ray); started on first use."""
        if self._exec is None:
            from ..executors import make_executor

            self._exec = make_executor(self.cfg, progress=self.progress, say=self.say)
        return self._exec

    def _check_stop(self) -> None:
        if self._stop_signal is not None:
            raise Interrupted(self._stop_signal)

    @contextmanager
    def _signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

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

    # ------------------------------------------------------------ main
    def run(self) -> RunResult:
        cfg, folder = self.cfg, self.folder
        check_policy(cfg.policy)
        fresh_folder = not folder.out.exists()
        if not (folder.state / "checkpoint.json").exists() or self.restart:
            load_reference(cfg.reference)  # a bad reference is refused before a run folder is made
        folder.create()
        locked = False
        try:
            folder.lock()
            locked = True
            resumed = folder.prepare(cfg, self.restart, say=self.say)
            if folder.finished() and folder.path("summary.json").exists():
                summary = read_json(folder.path("summary.json"))
                check_files(folder.out, summary)
                self.say(f"run in {folder.out} is already finished; nothing to do (use --restart to start over)")
                return RunResult(folder.out, summary, resumed=True, already_finished=True)
            if resumed:
                self.say(f"resuming the run in {folder.out} (stages done: {', '.join(folder.ck.done) or 'none'})")
            work = WorkLog(folder.state, committed_work(folder.state, folder.ck))
            folder.on_commit = lambda ck: work.commit_into(ck.work_committed)
            run = Run(cfg=cfg, folder=folder, work=work, say=self.say, check_stop=self._check_stop,
                      progress=self.progress, executor=self._executor)
            status = "error"
            with self._signals():
                try:
                    result = self._stages(run, resumed)
                    status = "finished"
                    return result
                except Interrupted:
                    status = "interrupted"
                    raise
                except CapReached:
                    status = "capped"
                    raise
                finally:
                    if self.extractor is not None:
                        self.extractor.close()
                    if self._exec is not None:
                        self._exec.close()
                        self._exec = None
                    work.close(status)
        except UserError:
            if locked and fresh_folder and not folder.ck.done:  # a user error leaves no empty run folder behind
                folder.close()
                shutil.rmtree(folder.out, ignore_errors=True)
            raise
        finally:
            folder.close()

    def _stages(self, run: Run, resumed: bool) -> RunResult:
        cfg, folder = self.cfg, self.folder
        with run.timed("index"):
            corpus = Corpus(cfg.corpus, cfg.corpus_options, index_dir=folder.state, progress=self.progress)
            killpoint("index")
            reference = load_reference(cfg.reference)
        plan = Plan.make(cfg, len(corpus))
        folder.ck.plan = plan.to_dict()
        if not resumed:
            notice = clamp_notice(cfg.budget, len(corpus))
            if notice:
                self.say(notice)
            if is_ranking(cfg.policy):
                self.say(f"corpus: {len(corpus)} documents; budget {plan.budget_docs} extractions; "
                         f"policy {cfg.policy} (a document ranking, no clusters)")
            else:
                self.say(f"corpus: {len(corpus)} documents; budget {plan.budget_docs} extractions "
                         f"({plan.warmup_docs} warm-up); k={plan.k}, {plan.clusters_per_round} cluster(s) x "
                         f"{plan.docs_per_pull} docs per round; policy {cfg.policy}")
        from_config = self.extractor is None
        if self.extractor is None:
            self.extractor = make_extractor(cfg.extract)
        extraction = Extraction_(run, self.extractor, from_config)
        if align_mode(cfg.policy, cfg.align.mode) == "full" and is_static(cfg.embed.model):
            raise UserError("align.mode full fine-tunes a transformer; a static embedder works with align.mode "
                            "adapter (or none)")
        with run.timed("load_embedder"):
            embedder = embedder_from_config(cfg.embed, cache_root(cfg), self.progress, self.say)
        with run.timed("reference"):
            ref_vecs, prior_vecs = reference_stage(run, embedder, reference.pairs)
        scorer = Scorer(ref_vecs, embedder.encode, cfg.score.metric, cfg.score.method, cfg.score.sinkhorn_reg)
        distance = scorer.distance

        def counted_distance(vectors: np.ndarray) -> float:
            d = distance(vectors)
            run.work.add("scored")
            return d
        scorer.distance = counted_distance
        env = LiveEnv(corpus.get, extraction, embedder.encode_each, embedder.dim)
        with run.timed("embed"):
            base = embed_stage(run, corpus, embedder, "doc_vectors.npy", shared_model=True)
            folder.mark("embed")
        steps = LiveSteps(run, corpus, embedder, extraction, env, base)
        inputs = Inputs(cfg=cfg, plan=plan, base=base, prior_vecs=prior_vecs,
                        similarity=recipe.Similarities(base, prior_vecs, cfg.bandit.similarity_k), scorer=scorer,
                        dim=embedder.dim, doc_texts=lambda: _LazyTexts(corpus),
                        ref_texts=[p.text() for p in reference.pairs],
                        doc_lengths=lambda rows: [len(d.text) for d in corpus.get(rows)])
        sel = build_selection(inputs, steps)
        del base, inputs
        policy = rounds_stage(run, sel, env, plan, extraction)
        summary = finalize_stage(run, corpus, plan, reference, scorer, self.extractor, embedder.dim,
                                 steps.clustering, policy)
        return RunResult(folder.out, summary, resumed=resumed)


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


def run(cfg: Config, progress: bool = True, restart: bool = False, extractor: Extractor | None = None,
        messages: bool | None = None) -> RunResult:
    """Run EQUAL end to end into ``cfg.out`` (resuming what is there). See :class:`Pipeline`.

    ``progress`` shows progress bars; ``messages`` (default: same as ``progress``) prints status lines
    (resuming, finished) to stderr.
    """
    return Pipeline(cfg, progress=progress, restart=restart, extractor=extractor, messages=messages).run()
