"""Test-only kill points: ``EQUAL_TEST_KILL_AT`` makes a run SIGKILL itself at a named point.

The points sit at stage boundaries (``<stage>_start``) and around commits: ``<journal>_appended`` after a
journal append and before its checkpoint, ``<unit>`` right after the checkpoint. The kill and resume tests
(``tests/e2e/test_resume.py``, ``tests/e2e/test_kill_stages.py``) kill there and check that a resume loses and
repeats nothing. With the variable unset a kill point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter

ENV = "EQUAL_TEST_KILL_AT"
_COUNTS: Counter[str] = Counter()


def killpoint(name: str) -> None:
    """``EQUAL_TEST_KILL_AT=name:n`` SIGKILLs this process at the n-th pass of point ``name``; ``name@s``
    SIGKILLs it ``s`` seconds after the first pass of ``name`` (wherever it then is: a random moment inside a
    stage when ``name`` is the stage's ``<stage>_start``). Items are comma-separated."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    _COUNTS[name] += 1
    for item in spec.split(","):
        if "@" in item:
            point, _, delay = item.partition("@")
            if point == name and _COUNTS[name] == 1:
                t = threading.Timer(float(delay), os.kill, (os.getpid(), signal.SIGKILL))
                t.daemon = True
                t.start()
            continue
        point, _, count = item.partition(":")
        if point == name and _COUNTS[name] == int(count or 1):
            os.kill(os.getpid(), signal.SIGKILL)
