"""What each process of a run did (``state/work.jsonl``) and what the run paid an LLM for (``state/llm_usage.json``)."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from ..io import atomic_write_json, read_json

if TYPE_CHECKING:
    from ..config import Config

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

    def commit_into(self, done: dict[str, int]) -> None:
        """Move the pending extraction and scoring counts into ``done`` (a checkpoint's ``work_committed``,
        about to be written)."""
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


def committed_work(state_dir: Path, ck: Any) -> dict[str, Any]:
    """The work whose results are committed in a run's ``state_dir`` (what a resume will not redo), for the
    work log's ``start`` line; ``ck`` is the run's :class:`~equal.run.folder.Checkpoint`."""
    import numpy as np

    rows = 0
    for name in ("doc_vectors.npy", "doc_vectors_full.npy"):
        prog = read_json(state_dir / (name + ".progress.json"), {}) or {}
        rows += int(prog.get("rows", 0))
    ref = 0
    if (state_dir / "reference.npz").exists():
        with np.load(state_dir / "reference.npz") as z:
            ref = int(len(z["reward"]) + len(z["prior"]))
    else:  # chunks of the reference samples embedded so far
        for name in ("reference_reward.npy", "reference_prior.npy"):
            prog = read_json(state_dir / (name + ".progress.json"), {}) or {}
            ref += int(prog.get("rows", 0))
    done = ck.work_committed
    return {"embedded": rows, "reference": ref, **{k: int(done.get(k, 0)) for k in _CHECKPOINTED_KINDS},
            "done": list(ck.done)}


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
        from ..extract.openai.spend import spend_cost

        cost = spend_cost(out["prompt_tokens"], out["completion_tokens"], cfg.extract.llm)
    out["cost"] = cost
    return out


class UsageMeter:
    """Keeps ``state/llm_usage.json`` (what earlier processes of the run paid for, plus this one) and tells the
    extractor what was spent before it started, so that the spend caps count the whole run."""

    def __init__(self, state_dir: Path, extractor: Any) -> None:
        self.path = Path(state_dir) / USAGE_FILE
        self.extractor = extractor
        self.base = {k: int(v) for k, v in llm_usage(Path(state_dir).parent).items() if k in _USAGE_KEYS}
        self.t0 = _usage_of(extractor.stats())
        self.last = dict(self.base)
        from ..extract.base import tell_spend_base

        tell_spend_base(extractor, self.base["prompt_tokens"] - self.t0["prompt_tokens"],
                        self.base["completion_tokens"] - self.t0["completion_tokens"])

    def record(self) -> None:
        """Write the run's paid usage when it changed. Called after every extraction call, whether or not its
        batch is committed: tokens are paid when the responses arrive (a resumed batch gets the finished
        documents from the cache, at no cost)."""
        now = _usage_of(self.extractor.stats())
        total = {k: self.base[k] + now[k] - self.t0[k] for k in _USAGE_KEYS}
        if total != self.last:
            atomic_write_json(self.path, total)
            self.last = total
