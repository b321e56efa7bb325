"""The code sandbox (equal.tune.coderun) against real attacks: each must fail, and every call must return
within its timeout plus a small margin.

Each attack program prints ``ran`` first, so that a sandbox that merely fails to start cannot pass a test;
it exits 0 only when the attack worked, so ``passed`` means a hole.
"""

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from equal.cli import main
from equal.tune import coderun
from equal.tune.bench_eval import FixedGenerator, evaluate, load_benchmark, score_completions
from equal.tune.coderun import SandboxUnavailable, run_python

MARGIN_S = 4.0  # the sandbox's start (two interpreter starts on a busy machine) and the kill


def _run(program: str, timeout: float = 5.0, **kw) -> coderun.RunResult:
    t0 = time.monotonic()
    result = run_python(program, timeout=timeout, **kw)
    wall = time.monotonic() - t0
    assert wall < timeout + MARGIN_S, f"took {wall:.1f}s with a {timeout}s timeout"
    assert result.sandboxed
    return result


def _ran(result: coderun.RunResult) -> None:
    assert result.output.startswith("ran"), result.output


def _processes_with(marker: str) -> list[int]:
    """Host pids whose command line holds ``marker`` (zombies excluded)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if marker.encode() in (d / "cmdline").read_bytes():
                state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state not in ("Z", "X"):
                    found.append(int(d.name))
        except OSError:
            continue
    return found


@pytest.fixture(autouse=True)
def _sandbox_here():
    problem = coderun.sandbox_problem()
    assert problem is None, problem  # these tests check the sandbox; without one they fail, never skip


def test_a_correct_completion_passes_and_a_wrong_one_fails():
    tests = "\nassert add(2, 3) == 5\nassert add(-1, 1) == 0\n"
    right = _run("def add(a, b):\n    return a + b\n" + tests)
    assert right.passed and right.status == "passed" and right.returncode == 0, right.output
    wrong = _run("def add(a, b):\n    return a - b\n" + tests)
    assert not wrong.passed and wrong.status == "failed" and "AssertionError" in wrong.output


def test_an_environment_under_tmp_runs_in_the_sandbox():
    """The sandbox's /tmp is private; a virtual environment that lives under the host's /tmp (a clone made in
    ``mktemp -d``) is bound read-only over it, so its interpreter starts and the program still cannot write
    there."""
    import shutil
    import tempfile

    top = tempfile.mkdtemp(prefix="equal-clone-", dir="/tmp")  # mode 0700, as `mktemp -d` makes it
    venv = os.path.join(top, ".venv")
    try:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", venv], check=True)
        src = str(Path(coderun.__file__).resolve().parents[2])
        probe = ("import sys\nprint('ran', sys.prefix)\nopen(sys.prefix + '/x', 'w')\n")
        child = (f"import json\nfrom equal.tune.coderun import run_python\nr = run_python({probe!r}, timeout=20)\n"
                 "print(json.dumps([r.sandboxed, r.status, r.output]))")
        out = subprocess.run([f"{venv}/bin/python", "-c", child], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "PYTHONPATH": src}, check=True).stdout
        sandboxed, status, output = json.loads(out.strip().splitlines()[-1])
        assert sandboxed and output.startswith(f"ran {venv}"), output  # the interpreter of the /tmp venv started
        assert status == "failed" and ("Read-only file system" in output or "Permission denied" in output), output
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_eval_scores_code_in_the_sandbox(tmp_path):
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"text": "Write add(a, b).", "test_list": ["assert add(2, 3) == 5"]}) + "\n")
    items = load_benchmark(bench, "code")
    good = evaluate(items, FixedGenerator(["```python\ndef add(a, b):\n    return a + b\n```"]), "code", timeout=10)
    bad = evaluate(items, FixedGenerator(["def add(a, b):\n    return 0\n"]), "code", timeout=10)
    assert (good.score, bad.score) == (1.0, 0.0)
    assert good.items[0]["sandboxed"] is True


def test_the_parents_environment_cannot_be_read(tmp_path):
    secret = "sk-equal-test-" + uuid.uuid4().hex
    attack = f"""print("ran", flush=True)
import os
found = [k for k, v in os.environ.items() if {secret!r} in v]
paths = ["/proc/%d/environ" % os.getppid(), "/proc/1/environ"]
paths += ["/proc/%s/environ" % p for p in os.listdir("/proc") if p.isdigit()]
for path in paths:
    try:
        if {secret!r}.encode() in open(path, "rb").read():
            found.append(path)
    except OSError:
        pass
print("found", found)
raise SystemExit(0 if found else 1)
"""
    # a real parent whose environment (from its exec, as /proc/<pid>/environ shows it) holds the key
    parent = tmp_path / "parent.py"
    parent.write_text("import json, sys\nfrom equal.tune.coderun import run_python\n"
                      "r = run_python(open(sys.argv[1]).read(), timeout=5)\n"
                      "print(json.dumps({'passed': r.passed, 'output': r.output, 'sandboxed': r.sandboxed}))\n")
    (tmp_path / "attack.py").write_text(attack)
    env = {**os.environ, "OPENAI_API_KEY": secret, "EQUAL_FAKE_SECRET": secret}
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, str(parent), str(tmp_path / "attack.py")], env=env, capture_output=True,
                          text=True, timeout=60)
    assert time.monotonic() - t0 < 5 + MARGIN_S + 5  # + the parent interpreter's start and imports
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["sandboxed"] and result["output"].startswith("ran"), (result, done.stderr)
    assert "found []" in result["output"] and not result["passed"], result["output"]


def test_no_file_can_be_written_outside(tmp_path):
    targets = [tmp_path / "escaped.txt", Path(__file__).resolve().parent / f"escaped-{uuid.uuid4().hex}.txt",
               Path.home() / f"escaped-{uuid.uuid4().hex}.txt", Path(sys.prefix) / f"escaped-{uuid.uuid4().hex}"]
    program = f"""print("ran", flush=True)
import os
wrote = []
for t in {[str(t) for t in targets]!r}:
    try:
        os.makedirs(os.path.dirname(t), exist_ok=True)
        with open(t, "w") as f:
            f.write("escaped")
        wrote.append(t)
    except OSError as e:
        print("refused", t, e)
print("wrote", len(wrote), "of", {len(targets)})
"""
    try:
        result = _run(program)
        _ran(result)
        assert "refused" in result.output  # the read-only binds (the environment's prefix) refuse outright
        for t in targets:
            assert not t.exists(), f"{t} was written from inside the sandbox"
    finally:
        for t in targets:
            t.unlink(missing_ok=True)


def test_the_host_cannot_be_listed_beyond_what_python_needs():
    allowed = coderun._ro_prefixes()  # the interpreter's installation and environment, read-only
    result = _run(f"""print("ran", flush=True)
import os
seen = []
for top in ("/work", "/root", "/etc", "/var", "/home", "/run", {str(Path(__file__).resolve().parent)!r}):
    for d, dirs, files in os.walk(top):
        dirs[:] = [n for n in dirs if os.path.join(d, n) not in {allowed!r}]
        seen += [os.path.join(d, n) for n in files]
print("seen", seen[:5])
raise SystemExit(0 if seen else 1)
""")
    _ran(result)
    assert "seen []" in result.output and not result.passed, result.output


def test_tcp_and_af_unix_sockets_reach_nothing(tmp_path):
    tcp = socket.socket()
    tcp.bind(("0.0.0.0", 0))
    tcp.listen(8)
    port = tcp.getsockname()[1]
    path = str(tmp_path / "agent.sock")
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(path)
    unix.listen(8)
    abstract_name = "\0equal-test-" + uuid.uuid4().hex
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(abstract_name)
    abstract.listen(8)
    hosts = ["127.0.0.1", "localhost"]
    try:
        hosts.append(socket.gethostbyname(socket.gethostname()))
    except OSError:
        pass
    program = f"""print("ran", flush=True)
import _socket, socket
reached = []
for host in {hosts!r}:
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect((host, {port}))
        s.send(b"stolen")
        reached.append(host)
    except OSError as e:
        print("tcp", host, e)
for addr in ({path!r}, {abstract_name!r}):
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(addr)
        s.send(b"stolen")
        reached.append(repr(addr))
    except OSError as e:
        print("unix", repr(addr), e)
print("reached", reached)
raise SystemExit(0 if reached else 1)
"""
    try:
        result = _run(program, timeout=15)
        _ran(result)
        assert "reached []" in result.output and not result.passed, result.output
        for server in (tcp, unix, abstract):
            server.settimeout(0.3)
            with pytest.raises(socket.timeout):
                server.accept()  # nothing ever connected
    finally:
        for server in (tcp, unix, abstract):
            server.close()


@pytest.mark.parametrize("parent", ["exits", "loops"])
def test_a_setsid_escapee_holding_stdout_dies_with_the_call(parent):
    marker = "equal-escapee-" + uuid.uuid4().hex
    program = f"""print("ran", flush=True)
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:  # a grandchild in its own session, holding stdout
        os.execv(sys.executable, [sys.executable, "-c", "import time\\nwhile True: time.sleep(1)", {marker!r}])
    os._exit(0)
time.sleep(0.5)
{"raise SystemExit(0)" if parent == "exits" else "while True: time.sleep(1)"}
"""
    timeout = 3.0
    result = _run(program, timeout=timeout)
    _ran(result)
    assert result.status == ("passed" if parent == "exits" else "timeout"), result.output
    if parent == "exits":
        assert result.seconds < timeout  # the call did not wait for the escapee's stdout
    assert _processes_with(marker) == []  # the escapee died with the pid namespace


def test_a_fork_bomb_is_bounded():
    marker = "equal-forkbomb-" + uuid.uuid4().hex
    program = f"""print("ran", flush=True)
import os, sys, time
started = 0
for _ in range(200):
    try:
        pid = os.fork()
    except OSError as e:
        print("fork refused:", e)
        break
    if pid == 0:
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(30)", {marker!r}])
    started += 1
print("started", started, {marker!r}, flush=True)
raise SystemExit(0 if started == 200 else 1)
"""
    result = _run(program, timeout=10)
    _ran(result)
    assert not result.passed and "fork refused" in result.output, result.output
    started = int(result.output.split("started", 1)[1].split()[0])
    assert started < coderun.MAX_PROCS
    assert _processes_with(marker) == []  # the children died with the pid namespace


def test_ten_gigabytes_of_memory_are_refused():
    result = _run("""print("ran", flush=True)
block = bytearray(10 * 2**30)
block[::4096] = b"x" * len(block[::4096])
raise SystemExit(0)
""", timeout=20)
    _ran(result)
    assert not result.passed and "MemoryError" in result.output, result.output


def test_sleeping_forever_is_cut_at_the_timeout():
    result = _run('print("ran", flush=True)\nimport time\ntime.sleep(10**6)\n', timeout=2)
    _ran(result)
    assert result.status == "timeout" and not result.passed
    assert result.seconds < 2 + MARGIN_S


@pytest.mark.parametrize("tool", ["/nonexistent/bwrap", "/bin/false"])
def test_code_eval_refuses_without_the_sandbox(monkeypatch, tmp_path, capsys, tool):
    monkeypatch.setenv("EQUAL_SANDBOX_BWRAP", tool)  # a missing bwrap, or one that cannot make namespaces
    assert coderun.sandbox_problem() is not None
    with pytest.raises(SandboxUnavailable):
        run_python("raise SystemExit(0)")
    calls = []

    class Recording(FixedGenerator):
        def generate(self, prompts):
            calls.append(prompts)
            return super().generate(prompts)

    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"text": "Write f().", "test_list": ["assert f() == 1"]}) + "\n")
    items = load_benchmark(bench, "code")
    with pytest.raises(SandboxUnavailable):
        evaluate(items, Recording(["def f():\n    return 1\n"]), "code")
    assert calls == []  # refused before anything was generated
    with pytest.raises(SandboxUnavailable):
        score_completions(items, ["def f():\n    return 1\n"], "code")

    rc = main(["eval", str(tmp_path / "no-model"), "--benchmark", str(bench), "--kind", "code"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "sandbox" in err[0] and "--unsafe-exec" in err[0], err
    # with --unsafe-exec the check is passed over (the run then stops at the missing model)
    rc = main(["eval", str(tmp_path / "no-model"), "--benchmark", str(bench), "--kind", "code", "--unsafe-exec"])
    err = capsys.readouterr().err
    assert rc == 2 and "sandbox" not in err and "no-model" in err, err
    # and the code then runs unsandboxed, as the user accepted
    unsafe = run_python("def f():\n    return 1\nassert f() == 1\n", timeout=10, unsafe=True)
    assert unsafe.passed and unsafe.sandboxed is False
    assert score_completions(items, ["def f():\n    return 1\n"], "code", unsafe_exec=True)[0]["correct"]
