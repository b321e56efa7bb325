"""The run folder as the writer sees it: layout, the lock, restart, the resume check, a typed checkpoint and
the journals it commits.

Journals (``dataset.jsonl``, ``rounds.jsonl``, ``extracted.jsonl``, ``state/*.jsonl|f32``) are append-only;
``state/checkpoint.json`` (written atomically after each unit of work) records their committed sizes, and a
resumed run cuts them back to it. A journal *shorter* than its committed size lost committed work: that is an
error naming the file, never a silent restart.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from ..version import __version__
from ..config import Config, result_fields_changed
from ..errors import JournalMismatch, UserError
from ..io import Journal, atomic_write_json, atomic_write_text, read_json
from ..layout import FolderLock

#: journal name -> path inside the run folder
JOURNALS = {
    "dataset": "dataset.jsonl",
    "rounds": "rounds.jsonl",
    "extracted": "extracted.jsonl",
    "warmup": "state/warmup_pairs.jsonl",
    "warmup_vec": "state/warmup_vectors.f32",
    "bandit_vec": "state/bandit_vectors.f32",
}
#: what ``--restart`` removes: the run's outputs and folders (never anything else in the folder)
OUTPUT_FILES = ("dataset.jsonl", "rounds.jsonl", "extracted.jsonl", "summary.json", "report.md", "config.yaml",
                "report.html", "hygiene_dropped.jsonl")
OUTPUT_FOLDERS = ("state", "model", "report")


@dataclass
class Checkpoint:
    """``state/checkpoint.json``: the single point of truth for resume."""

    version: str = __version__
    done: list[str] = field(default_factory=list)  # stages finished, in order
    stage_seconds: dict[str, float] = field(default_factory=dict)
    journals: dict[str, int] = field(default_factory=dict)  # committed bytes per journal
    work_committed: dict[str, int] = field(default_factory=dict)  # work whose results are committed
    plan: dict[str, Any] = field(default_factory=dict)
    extraction: dict[str, Any] = field(default_factory=dict)  # docs, ok, empty, cached, failed by reason
    warmup_docs_done: int = 0
    remote_extractor_stats: dict[str, Any] = field(default_factory=dict)
    align: dict[str, Any] = field(default_factory=dict)
    bandit: dict[str, Any] = field(default_factory=dict)  # the loop state (+ warmup_arms)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Checkpoint":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def add_seconds(self, stage: str, seconds: float) -> None:
        self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds


class RunFolder:
    """One run folder, for its one writer: ``prepare`` (create or check, restart, resume), ``commit``."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.state = self.out / "state"
        self.ck = Checkpoint()
        self.journals: dict[str, Journal] = {}
        self._lock: FolderLock | None = None
        self.on_commit: Callable[[Checkpoint], None] | None = None  # e.g. the work log's committed counts

    def path(self, name: str) -> Path:
        return self.out / name

    # ---------------------------------------------------------------- life
    def lock(self) -> None:
        """Take the folder's writer lock (held until :meth:`close` or the process ends)."""
        self._lock = FolderLock(self.out).acquire()

    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def create(self) -> None:
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self.state.mkdir(exist_ok=True)
            probe = self.out / ".write-test"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as e:
            raise UserError(f"cannot write to the output folder {self.out}: {e.strerror or e}") from None

    def restart(self) -> None:
        """Remove the run's outputs and state (what ``--restart`` discards)."""
        for name in OUTPUT_FILES:
            (self.out / name).unlink(missing_ok=True)
        for folder in OUTPUT_FOLDERS:
            shutil.rmtree(self.out / folder, ignore_errors=True)
        self.state.mkdir(exist_ok=True)

    def prepare(self, cfg: Config, restart: bool = False, say: Callable[[str], None] = print) -> bool:
        """Create or check the folder, open and cut back its journals; returns True when resuming."""
        self.create()
        if restart:
            self.restart()
        ck_path = self.state / "checkpoint.json"
        cfg_path = self.out / "config.yaml"
        resumed = ck_path.exists()
        if resumed:
            import yaml

            old = yaml.safe_load(cfg_path.read_text()) if cfg_path.exists() else {}
            changed = result_fields_changed(old or {}, cfg.to_dict())
            if changed:
                raise UserError(
                    f"{self.out} holds a run with a different config ({', '.join(changed)} changed); "
                    f"use another --out, or --restart to start over")
            try:
                self.ck = Checkpoint.from_dict(read_json(ck_path))
            except (ValueError, TypeError):
                raise JournalMismatch(f"{ck_path} is damaged; rerun with --restart") from None
        else:
            self.ck = Checkpoint()
        if not self.finished():  # a finished run folder is left exactly as it is
            atomic_write_text(cfg_path, cfg.to_yaml(comments=False))
        self.journals = {name: Journal(self.out / rel) for name, rel in JOURNALS.items()}
        for name, j in self.journals.items():
            want = int(self.ck.journals.get(name, 0))
            if j.size() < want:
                raise JournalMismatch(
                    f"{j.path} holds {j.size()} bytes, less than the {want} its checkpoint committed: committed "
                    f"work was lost; rerun with --restart")
            if self.finished():
                continue  # a finished run's journals are checked against its summary, never cut
            dropped = j.truncate(want)
            if dropped:
                say(f"resume: dropped {dropped} uncommitted bytes from {j.path.name}")
        return resumed

    # ---------------------------------------------------------------- checkpoint
    def finished(self) -> bool:
        return "finalize" in self.ck.done

    def done(self, stage: str) -> bool:
        return stage in self.ck.done

    def commit(self) -> None:
        """Record journal sizes and loop state atomically."""
        self.ck.journals = {name: j.size() for name, j in self.journals.items()}
        if self.on_commit is not None:
            self.on_commit(self.ck)
        atomic_write_json(self.state / "checkpoint.json", self.ck.to_dict())

    def mark(self, stage: str) -> None:
        if stage not in self.ck.done:
            self.ck.done.append(stage)
        self.commit()
