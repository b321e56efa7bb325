"""The last stage of a live run: ``summary.json`` (counts, timings, skips, final OT, usage) and the report."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from ..version import __version__
from ..cluster import Clustering
from ..executors import merge_stats
from ..hygiene import run_summary as hygiene_summary
from ..io import atomic_write_json, read_jsonl
from ..layout import RECORDED, file_record
from ..select.policies import ArmStats
from .killpoints import killpoint
from .worklog import llm_usage, work_log

log = logging.getLogger("equal")


def finalize_stage(run, corpus, plan, reference, scorer, extractor, dim: int, clustering: Clustering,
                   policy: ArmStats) -> dict[str, Any]:
    run.stage("finalize")
    t0 = time.perf_counter()
    cfg, folder, ck = run.cfg, run.folder, run.folder.ck
    vecs = np.concatenate([
        np.fromfile(folder.journals["warmup_vec"].path, dtype=np.float32).reshape(-1, dim),
        np.fromfile(folder.journals["bandit_vec"].path, dtype=np.float32).reshape(-1, dim)])
    n_pairs = sum(1 for _ in read_jsonl(folder.path("dataset.jsonl")))
    n_extracted = sum(1 for _ in read_jsonl(folder.path("extracted.jsonl")))
    cap = cfg.score.eval_max_pairs
    if len(vecs) > cap:
        vecs = vecs[np.sort(np.random.default_rng([cfg.seed, 0xE7A]).choice(len(vecs), cap, replace=False))]
    final_ot = scorer.distance(vecs) if len(vecs) else None
    bandit = ck.bandit
    ex_stats = merge_stats(extractor.stats(), ck.remote_extractor_stats)
    ck.add_seconds("finalize", time.perf_counter() - t0)
    summary = {
        "equal_version": __version__,
        "policy": cfg.policy,
        "docs_total": plan.n_docs,
        "docs_extracted": n_extracted,
        "docs_warmup": int(plan.warmup_docs),
        "docs_bandit": n_extracted - int(plan.warmup_docs),
        "pairs": n_pairs,
        "extraction_calls": int(ex_stats.get("calls", ck.extraction.get("docs", 0))),
        "final_ot": final_ot,
        "rounds": int(bandit.get("round", 0)),
        "plan": plan.to_dict(),
        "stage_seconds": {k: round(v, 3) for k, v in ck.stage_seconds.items()},
        "skipped": {**dict(corpus.skipped),
                    **{f"extract_failed:{k}": v for k, v in ck.extraction.get("failed", {}).items()}},
        "corpus_notes": dict(corpus.notes),
        "reference": {"items": len(reference.pairs), "skipped": dict(reference.skipped)},
        "extraction": ck.extraction,
        "extractor": {"name": extractor.name, **ex_stats},
        "llm_usage": llm_usage(folder.out, cfg),
        "align": ck.align,
        "warmup_arms": bandit.get("warmup_arms", {}),
        "arms": {"pulls": policy.pulls.tolist(),
                 "mean_reward": [None if not np.isfinite(m) else float(m) for m in _real_means(policy)],
                 "sizes": np.bincount(clustering.labels, minlength=clustering.k).tolist()},
        "config": cfg.to_dict(),
        "work": work_log(folder.out),
        "hygiene": hygiene_summary(folder.out, cfg.hygiene),  # what exports keep; dataset.jsonl keeps all
        # what readers check the journals against (``equal.layout.check_files``)
        "files": {name: file_record(folder.path(name)) for name in RECORDED},
    }
    atomic_write_json(folder.path("summary.json"), summary)
    killpoint("summary")
    if cfg.report:
        run.stage("report")
        try:
            from ..report import write_report

            write_report(folder.out)
        except Exception as e:  # a plot that fails must not cost the run
            log.warning("could not write the report: %s", e)
    killpoint("finalize")
    folder.mark("finalize")
    return summary


def _real_means(policy: ArmStats) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(policy.pulls > 0, policy.sums / np.maximum(policy.pulls, 1), np.nan)
