"""Run an untrusted Python program in a subprocess: a time limit, no network, bounded memory.

The program runs in a fresh temporary folder with ``python -I`` (isolated: no user site, no PYTHON*
variables), a minimal environment, its own process group (killed whole, grandchildren included, at the
time limit), and resource limits on memory, file size and process count. Network: where unprivileged user
namespaces work, the program runs under ``unshare --net`` (no interface but a down loopback); everywhere,
a preamble replaces the ``socket`` module's constructors so a connection attempt raises.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

_PREAMBLE = '''\
import socket as _s
def _no_net(*a, **k):
    raise OSError("network access is disabled in equal's code runner")
class _NoSocket(_s.socket):
    def __init__(self, *a, **k):
        _no_net()
_s.socket = _NoSocket
_s.create_connection = _no_net
_s.getaddrinfo = _no_net
_s.socketpair = _no_net
del _s, _NoSocket
'''


@dataclass
class RunResult:
    passed: bool
    status: str  # passed | failed | timeout
    returncode: int | None
    seconds: float
    output: str  # the tail of stdout + stderr


@functools.lru_cache(maxsize=1)
def _unshare_prefix() -> tuple[str, ...]:
    """``unshare`` arguments that give the child an empty network namespace, where the system allows it."""
    exe = shutil.which("unshare")
    if not exe:
        return ()
    for args in ((exe, "--net"), (exe, "--user", "--map-root-user", "--net")):
        try:
            r = subprocess.run([*args, "true"], capture_output=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            continue
        if r.returncode == 0:
            return args
    return ()


def _limits(memory_mb: int, cpu_seconds: int) -> None:  # runs in the child before exec
    import resource

    os.setsid()
    for res, value in ((resource.RLIMIT_AS, memory_mb * 2**20), (resource.RLIMIT_CPU, cpu_seconds),
                       (resource.RLIMIT_FSIZE, 64 * 2**20), (resource.RLIMIT_CORE, 0)):
        try:
            resource.setrlimit(res, (value, value))
        except (ValueError, OSError):
            pass


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_python(program: str, timeout: float = 10.0, memory_mb: int = 2048, network: bool = False) -> RunResult:
    """Run ``program`` with the interpreter running this code; ``passed`` when it exits 0 within ``timeout``."""
    source = program if network else _PREAMBLE + program
    with tempfile.TemporaryDirectory(prefix="equal-code-") as tmp:
        path = os.path.join(tmp, "main.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(source)
        env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
        prefix = () if network else _unshare_prefix()
        cmd = [*prefix, sys.executable, "-I", "-B", path]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT,
                                preexec_fn=functools.partial(_limits, memory_mb, int(timeout) + 2))
        try:
            out, _ = proc.communicate(timeout=timeout)
            status = "passed" if proc.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            out, _ = proc.communicate()
            status = "timeout"
        finally:
            _kill_group(proc.pid)  # whatever the program left running in its group
        seconds = time.perf_counter() - t0
    text = out.decode("utf-8", "replace") if out else ""
    return RunResult(passed=status == "passed", status=status, returncode=proc.returncode, seconds=round(seconds, 3),
                     output=text[-2000:])
