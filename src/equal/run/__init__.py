"""A live run of EQUAL into a run folder, with checkpoints so that it can be killed and resumed.

The run folder is the API between commands::

    config.yaml      the effective config (a resumed run must match it)
    dataset.jsonl    every extracted pair that extract.drop_rules keeps, with provenance (round 0 = warm-up)
    extracted.jsonl  every extracted document (round 0 = warm-up), pairs or not: the budget's audit
    rounds.jsonl     one line per bandit pull
    summary.json     counts, timings, skips, final OT, the LLM usage, the config, the journals' digests
    model/           the aligned embedder (align.mode = full)
    state/           checkpoints: corpus index, embeddings, clusters, journals
    .equal.lock      held by the one process writing into the folder

* :mod:`~equal.run.folder`: :class:`RunFolder` (layout, restart, resume check, the typed checkpoint, journals);
* :mod:`~equal.run.stages`: one function per stage, and the recipe's steps done live;
* :mod:`~equal.run.pipeline`: the order, signals, status lines;
* :mod:`~equal.run.worklog`: what each process did and what the run paid for;
* :mod:`~equal.run.killpoints`: the test-only kill points.
"""

from ..errors import Interrupted, UserError
from ..sizing import Plan
from ..vectors import cache_root, embed_cache_file, embed_corpus, encode_block, reference_key, reference_vectors
from .folder import Checkpoint, RunFolder
from .pipeline import Pipeline, RunResult, run
from .stages import CapReached
from .worklog import WORK_KINDS, llm_usage, work_log

#: the error a run stops with for a user's problem (kept under its old name)
RunError = UserError

__all__ = ["Pipeline", "RunResult", "run", "RunFolder", "Checkpoint", "Plan", "RunError", "CapReached",
           "Interrupted", "work_log", "llm_usage", "WORK_KINDS", "cache_root", "embed_cache_file",
           "embed_corpus", "encode_block", "reference_key", "reference_vectors"]
