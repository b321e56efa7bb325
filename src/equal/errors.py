"""One base for every error that equal reports to a user as one line, with an exit code.

The CLI catches :class:`EqualError` and nothing else: it prints ``equal: error: <message>`` (``stopped`` for a
cap, ``interrupted`` for a signal) and exits with ``exit_code``. Everything else is a bug and keeps its
traceback. This module imports nothing from equal, so every layer may derive from it.
"""

from __future__ import annotations


class EqualError(Exception):
    """A problem a user can act on: one line, no traceback. ``exit_code`` is what the CLI returns."""

    exit_code: int = 2
    #: how the CLI prefixes the message ("error", "stopped", "interrupted")
    label: str = "error"


class UserError(EqualError):
    """Bad input, a bad config or a folder that cannot be used (exit 2)."""


class StopError(EqualError):
    """A run stopped on purpose before the budget was spent; it is saved and resumes (e.g. a spend cap: exit 3)."""

    exit_code = 3
    label = "stopped"


class Interrupted(EqualError):
    """SIGINT/SIGTERM arrived; state was saved and the run can be resumed (exit 128 + the signal)."""

    label = "interrupted"

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum
        self.exit_code = 128 + int(signum)


class FolderInUse(UserError):
    """Another process holds the run folder's lock (one writer per run folder)."""


class JournalMismatch(UserError):
    """A run folder's files disagree with what its checkpoint or summary recorded."""


def cause_of(e: BaseException | None, kind: type) -> BaseException | None:
    """``e`` or the first exception of type ``kind`` in its cause/context chain or in Ray's wrappers (``.cause``),
    else None: the one place where an error that a worker raised is unwrapped."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, kind):
            return e
        seen.add(id(e))
        e = getattr(e, "cause", None) or e.__cause__ or e.__context__
    return None
