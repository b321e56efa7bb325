"""The ``equal`` command line: one module per command, flags generated from the config (:mod:`.flags`).

* :mod:`.run`: ``run`` (``--dry-run``), ``config``;
* :mod:`.replays`: ``extract-all``, ``compare``;
* :mod:`.folders`: ``report``, ``export``, ``inspect``;
* :mod:`.tune`: ``train``, ``eval``.

Every command returns an exit code. Errors a user can act on are :class:`equal.errors.EqualError`s, caught here
once: one line on stderr, the error's exit code (2 user error, 3 a cap, 128+n a signal).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from ..errors import EqualError, Interrupted
from . import folders, replays, run, tune
from .flags import load_config

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class _SubParsers(argparse._SubParsersAction):
    """Every subcommand also takes ``--log-level`` (after the subcommand, as users type it)."""

    def add_parser(self, name, **kwargs):  # type: ignore[override]
        p = super().add_parser(name, **kwargs)
        p.add_argument("--log-level", choices=LOG_LEVELS, type=str.lower, default=argparse.SUPPRESS,
                       help="Logging level of messages on stderr (default warning; info adds the run's "
                       "status lines as log records).")
        return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="equal", description="EQUAL: select documents with a bandit over clusters "
                                     "and extract instruction-tuning QA pairs from them.")
    parser.add_argument("--version", action="version", version=f"equal {__import__('equal').__version__}")
    parser.add_argument("--log-level", choices=LOG_LEVELS, type=str.lower, default="warning",
                        help="Logging level of messages on stderr (default warning).")
    parser.register("action", "parsers", _SubParsers)
    sub = parser.add_subparsers(dest="command", required=True)
    run.add_parsers(sub)       # run, config
    replays.add_parsers(sub)   # extract-all, compare
    folders.add_parsers(sub)   # report, export, inspect
    tune.add_parsers(sub)      # train, eval
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = getattr(logging, args.log_level.upper())
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(level)  # also where a handler was already set (in-process callers)
    try:
        return _dispatch(args)
    except Interrupted as e:
        print(f"equal: interrupted (signal {e.signum}); progress is saved. Resume with the same command.",
              file=sys.stderr)
        return e.exit_code
    except EqualError as e:  # every user-facing error: one line, its exit code
        print(f"equal: {e.label}: {e}", file=sys.stderr)
        return e.exit_code


def _dispatch(args: argparse.Namespace) -> int:
    if getattr(args, "needs_config", False):
        return args.handler(load_config(args), args)
    return args.handler(args)
