"""Run an untrusted Python program (a model's completion with its tests) in a sandbox that holds.

Each call runs the program under bubblewrap (``bwrap``) in fresh user, pid, mount, network, IPC, UTS and
cgroup namespaces:

* **File system**: an empty root with read-only binds of ``/usr`` (and the ``/bin``, ``/lib*``, ``/sbin``
  links or folders), the interpreter's prefix and the active environment's prefix; a new ``/proc`` of its
  own pid namespace (the parent's environment is not there to read), a minimal ``/dev`` and a small
  private ``/tmp`` (tmpfs, :data:`TMPFS_BYTES`) that is also its home and working folder (an interpreter or
  environment that lives under ``/tmp`` is bound read-only over it). No host path is
  writable: the program's output goes to a file the parent opened, bounded by the file-size limit.
* **Network**: a network namespace of its own (loopback only), so TCP reaches nothing on the host and
  abstract AF_UNIX sockets are those of the sandbox; path AF_UNIX sockets (``docker.sock``, an ssh agent)
  are not in its file system.
* **Privileges**: it runs as uid/gid 65534 in its user namespace with every capability dropped,
  ``no_new_privs`` and (bubblewrap 0.8+) no nested user namespaces; a clean environment (``PATH``,
  ``HOME``, ``TMPDIR``, ``LANG`` only) and ``python -I``. When equal runs as root, bwrap itself is started
  as uid 65534 (from a private mount namespace where the interpreter's folders are bound where that uid can
  reach them), so the sandbox's uid is host uid 65534, never host root: the kernel does not apply
  ``RLIMIT_NPROC`` to root, and a mapped root would own what it touches.
* **Limits** (set inside, before the program starts, so that the process count is the sandbox's own):
  ``RLIMIT_NPROC`` (:data:`MAX_PROCS`), ``RLIMIT_AS`` (``memory_mb``), ``RLIMIT_FSIZE``
  (:data:`MAX_FILE_BYTES`), ``RLIMIT_CPU``, ``RLIMIT_NOFILE`` and no core files.
* **Time**: at the time limit, and after a normal exit too, the pid namespace's init is killed (through a
  pidfd, never a recycled pid), which kills every process in it (a ``setsid()`` escapee included); the
  output goes to a file, so nothing waits on a pipe, and every wait has a timeout.

Where the namespaces cannot be made (no ``bwrap``, or a kernel or container that refuses user namespaces),
:func:`run_python` raises :class:`SandboxUnavailable` unless ``unsafe=True``; then the program runs as a
plain subprocess (own session, the same limits, killed as a group) and can reach the host.
``EQUAL_SANDBOX_BWRAP`` (or the module setting :data:`BWRAP`) names the ``bwrap`` to use.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from ..errors import UserError

BWRAP = "bwrap"  # the bubblewrap executable (a name on PATH or a path); EQUAL_SANDBOX_BWRAP overrides it
MAX_PROCS = 32  # processes (and threads) the program may have at once
MAX_FILE_BYTES = 16 * 2**20  # the largest file it may write, its output included
TMPFS_BYTES = 64 * 2**20  # its private /tmp
OUTPUT_TAIL = 2000  # characters of output kept in the result
SANDBOX_UID = 65534
KILL_GRACE_S = 2.0  # how long to wait for the processes to be reaped after SIGKILL

INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap) where user namespaces are "
                "allowed, or pass --unsafe-exec to run model-written code unsandboxed at your own risk")

# Runs inside the sandbox before the program: the limits, then exec of the program itself.
_LAUNCHER = '''\
import os, resource, sys
for r, v in ((resource.RLIMIT_NPROC, {nproc}), (resource.RLIMIT_AS, {mem}), (resource.RLIMIT_FSIZE, {fsize}),
             (resource.RLIMIT_CPU, {cpu}), (resource.RLIMIT_NOFILE, 256), (resource.RLIMIT_CORE, 0)):
    resource.setrlimit(r, (v, v))
os.execv(sys.executable, [sys.executable, "-I", "-B", {path!r}])
'''


class SandboxUnavailable(UserError, RuntimeError):
    """The namespaces for running untrusted code cannot be made here (a user error: one line, exit 2)."""


@dataclass
class RunResult:
    passed: bool
    status: str  # passed | failed | timeout
    returncode: int | None
    seconds: float
    output: str  # the tail of stdout + stderr
    sandboxed: bool = True


def bwrap_path() -> str | None:
    """The ``bwrap`` executable in use, or None when there is none."""
    name = os.environ.get("EQUAL_SANDBOX_BWRAP") or BWRAP
    return shutil.which(name)


@functools.lru_cache(maxsize=8)
def _probe(exe: str) -> tuple[tuple[str, ...], str | None]:
    """The extra options ``exe`` supports and None when it can make the sandbox here, else why not (one line).

    ``--disable-userns`` (bubblewrap 0.8+: no nested user namespace, so no capabilities regained inside one)
    is used where the installed bwrap has it.
    """
    why = ""
    for extra in (("--disable-userns",), ()):
        with tempfile.TemporaryDirectory(prefix="equal-code-") as tmp:
            try:
                cmd, kw = _bwrap_command(exe, extra, False, tmp, None, ["/bin/true"])
                r = subprocess.run(cmd, capture_output=True, timeout=30, stdin=subprocess.DEVNULL, **kw)
            except (OSError, subprocess.SubprocessError) as e:
                return (), f"{exe} cannot run: {e}"
        if r.returncode == 0:
            return extra, None
        lines = (r.stderr or b"").decode("utf-8", "replace").strip().splitlines()
        why = why or (lines[-1] if lines else f"exit {r.returncode}")
    return (), f"{exe} cannot make the namespaces: {why}"


def sandbox_problem() -> str | None:
    """None when untrusted code can be sandboxed here, else a one-line reason with what to do."""
    exe = bwrap_path()
    if exe is None:
        name = os.environ.get("EQUAL_SANDBOX_BWRAP") or BWRAP
        return f"cannot sandbox model-written code: {name} not found; {INSTALL_HINT}"
    why = _probe(exe)[1]
    return f"cannot sandbox model-written code: {why}; {INSTALL_HINT}" if why else None


def require_sandbox() -> None:
    """Raise :class:`SandboxUnavailable` when untrusted code cannot be sandboxed here."""
    problem = sandbox_problem()
    if problem:
        raise SandboxUnavailable(problem)


def _namespace_args(network: bool, extra: tuple[str, ...] = ()) -> list[str]:
    args = ["--unshare-user", *extra, "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--cap-drop", "ALL",
            "--die-with-parent", "--new-session", "--clearenv", "--hostname", "sandbox"]
    if not network:
        args.append("--unshare-net")
    return args


def _ro_prefixes() -> list[str]:
    """Folders outside /usr the interpreter needs: its installation and the active environment."""
    out: list[str] = []
    for p in (sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(sys.executable))):
        p = os.path.realpath(p)
        if p in ("/", "") or any(p == q or p.startswith(q + "/") for q in ["/usr", *out]):
            continue
        out.append(p)
    return out


def _fs_args(prefixes: list[tuple[str, str]], program_dir: str | None) -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    under_tmp = [(src, dest) for src, dest in prefixes if dest == "/tmp" or dest.startswith("/tmp/")]
    for src, dest in (x for x in prefixes if x not in under_tmp):
        args += ["--ro-bind", src, dest]
    args += ["--proc", "/proc", "--dev", "/dev", "--size", str(TMPFS_BYTES), "--tmpfs", "/tmp"]
    for src, dest in under_tmp:  # an environment under /tmp: bound over the private /tmp, after it is made
        args += ["--ro-bind", src, dest]
    if program_dir:
        args += ["--ro-bind", program_dir, "/code"]
    return args + ["--chdir", "/tmp"]


_MS_BIND, _MS_REC, _MS_PRIVATE, _CLONE_NEWNS = 4096, 16384, 1 << 18, 0x00020000


def _as_sandbox_user(stage: list[tuple[str, str]]) -> None:  # runs in the child (root) before exec of bwrap
    """Bind ``stage`` (source, staging folder) in a private mount namespace, then become uid/gid 65534.

    bwrap then runs unprivileged, so its user namespace maps the sandbox's uid to host uid 65534, never to
    root (for which the kernel ignores ``RLIMIT_NPROC``); the staging binds make interpreter folders under an
    unreadable parent (``/root/.pyenv``) reachable to it, and vanish with the namespace.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWNS) != 0 or libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        raise OSError(ctypes.get_errno(), "cannot make a private mount namespace")
    for src, dest in stage:
        if libc.mount(src.encode(), dest.encode(), None, _MS_BIND | _MS_REC, None) != 0:
            raise OSError(ctypes.get_errno(), f"cannot bind {src}")
    os.setgroups([])
    os.setresgid(SANDBOX_UID, SANDBOX_UID, SANDBOX_UID)
    os.setresuid(SANDBOX_UID, SANDBOX_UID, SANDBOX_UID)


def _bwrap_command(exe: str, extra: tuple[str, ...], network: bool, tmp: str, program_dir: str | None,
                   argv: list[str], info_fd: int | None = None) -> tuple[list[str], dict]:
    """The bwrap command line and Popen keywords for running ``argv`` in the sandbox; ``tmp`` is the call's
    host folder (staging folders go there)."""
    prefixes = [(p, p) for p in _ro_prefixes()]
    kw: dict = {"env": {}, "cwd": tmp, "pass_fds": (info_fd,) if info_fd is not None else ()}
    if os.geteuid() == 0:
        stage = []
        for i, (src, _) in enumerate(prefixes):
            d = os.path.join(tmp, f"ro{i}")
            os.mkdir(d)
            stage.append((src, d))
        os.chmod(tmp, 0o711)  # reachable, not listable, by uid 65534
        prefixes = [(d, p) for (p, d) in stage]
        kw["preexec_fn"] = functools.partial(_as_sandbox_user, stage)
    cmd = [exe, *_namespace_args(network, extra), *_fs_args(prefixes, program_dir)]
    if info_fd is not None:
        cmd += ["--info-fd", str(info_fd)]
    cmd += ["--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp", "--setenv", "TMPDIR", "/tmp",
            "--setenv", "LANG", "C.UTF-8", "--", *argv]
    return cmd, kw


def _limits(memory_mb: int, cpu_seconds: int) -> None:  # the unsafe path: runs in the child before exec
    import resource

    for res, value in ((resource.RLIMIT_AS, memory_mb * 2**20), (resource.RLIMIT_CPU, cpu_seconds),
                       (resource.RLIMIT_FSIZE, MAX_FILE_BYTES), (resource.RLIMIT_CORE, 0)):
        try:
            resource.setrlimit(res, (value, value))
        except (ValueError, OSError):
            pass


def _kill(pid: int | None, group: bool = False) -> None:
    if not pid:
        return
    try:
        (os.killpg if group else os.kill)(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _init_pidfd(info_r: int, deadline: float) -> int | None:
    """A pidfd of the sandbox's pid-namespace init (its host pid is what bwrap reports on its info fd)."""
    data = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([info_r], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(info_r, 4096)
        if not chunk:
            break
        data += chunk
        try:
            pid = int(json.loads(data.decode("utf-8"))["child-pid"])
        except (ValueError, KeyError, TypeError):
            continue
        try:  # held from now on, so the kill below can never reach a recycled pid
            return os.pidfd_open(pid)
        except OSError:
            return None
    return None


def _kill_namespace(pidfd: int | None) -> None:
    """SIGKILL the pid namespace's init and wait (bounded) until it has gone: the kernel kills and reaps
    every other process of the namespace before its init is gone (bwrap's own exit does not wait for that)."""
    if pidfd is None:
        return
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except OSError:
        pass  # already gone
    select.select([pidfd], [], [], KILL_GRACE_S)  # readable once the process has exited
    os.close(pidfd)


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 4 * OUTPUT_TAIL))
            return f.read().decode("utf-8", "replace")[-OUTPUT_TAIL:]
    except OSError:
        return ""


def run_python(program: str, timeout: float = 10.0, memory_mb: int = 2048, network: bool = False,
               unsafe: bool = False) -> RunResult:
    """Run ``program`` in the sandbox; ``passed`` when it exits 0 within ``timeout`` seconds.

    Returns within about ``timeout`` plus the sandbox's start and :data:`KILL_GRACE_S`, whatever the program
    does. Raises :class:`SandboxUnavailable` when the sandbox cannot be made, unless ``unsafe`` (then the
    program runs unsandboxed: ``sandboxed`` is False in the result). ``network=True`` shares the host's
    network namespace (for tests of the runner only).
    """
    exe = bwrap_path()
    problem = sandbox_problem()
    if problem and not unsafe:
        raise SandboxUnavailable(problem)
    sandboxed = problem is None
    cpu = int(timeout) + 2
    with tempfile.TemporaryDirectory(prefix="equal-code-") as tmp:
        code_dir = os.path.join(tmp, "code")
        os.mkdir(code_dir)
        with open(os.path.join(code_dir, "main.py"), "w", encoding="utf-8") as f:
            f.write(program)
        os.chmod(code_dir, 0o755)
        os.chmod(os.path.join(code_dir, "main.py"), 0o644)
        out_path = os.path.join(tmp, "output")
        launcher = _LAUNCHER.format(nproc=MAX_PROCS, mem=memory_mb * 2**20, fsize=MAX_FILE_BYTES, cpu=cpu,
                                    path="/code/main.py" if sandboxed else os.path.join(code_dir, "main.py"))
        info_r = info_w = None
        with open(out_path, "wb") as out:
            if sandboxed:
                assert exe is not None
                info_r, info_w = os.pipe()
                cmd, kw = _bwrap_command(exe, _probe(exe)[0], network, tmp, code_dir,
                                         [sys.executable, "-I", "-B", "-c", launcher], info_w)
            else:
                cmd = [sys.executable, "-I", "-B", os.path.join(code_dir, "main.py")]
                env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8"}
                kw = {"env": env, "cwd": tmp, "preexec_fn": functools.partial(_limits, memory_mb, cpu)}
            t0 = time.monotonic()
            try:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True, **kw)
            finally:
                if info_w is not None:
                    os.close(info_w)
        init = None
        try:
            if info_r is not None:
                init = _init_pidfd(info_r, t0 + min(timeout, 10.0))
            try:
                proc.wait(timeout=max(0.0, t0 + timeout - time.monotonic()))
                status = "passed" if proc.returncode == 0 else "failed"
            except subprocess.TimeoutExpired:
                status = "timeout"
        finally:
            _kill_namespace(init)  # always: what the program left running in its namespace dies now
            if proc.poll() is None or not sandboxed:
                _kill(proc.pid, group=True)  # bwrap and its session; unsandboxed, whatever the program left
            try:
                proc.wait(timeout=KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
            if info_r is not None:
                os.close(info_r)
        seconds = time.monotonic() - t0
        text = _tail(out_path)
    return RunResult(passed=status == "passed", status=status, returncode=proc.returncode,
                     seconds=round(seconds, 3), output=text, sandboxed=sandboxed)
