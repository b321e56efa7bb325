#!/usr/bin/env python3
"""Throughput of the openai extractor against the test server with a fixed latency.

The server (tests/servers/openai_server.py) runs in its own process, so the
client and the server do not share a GIL. For each concurrency c the extractor
extracts 8*c distinct real documents (cache off), after one unmeasured wave
that opens the connections; the ideal rate is
c / latency requests per second. Prints a table of the measured rate as a share
of the ideal; at concurrency 32 it should reach 0.8 or more.

    .venv/bin/python bench/llm_throughput.py [--latency 0.2] [--levels 1 8 32 64]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("EQUAL_SHARED_DATA", ROOT.parent / "shared" / "data")) / "corpus.jsonl"


def load_docs(n: int):
    from equal.types import Document

    docs = []
    with CORPUS.open(encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            docs.append(Document(index=len(docs), id=rec["id"], text=rec["text"]))
            if len(docs) >= n:
                break
    while len(docs) < n:  # a small corpus: make distinct copies
        d = docs[len(docs) % max(1, len(docs))]
        docs.append(Document(index=len(docs), id=f"{d.id}-{len(docs)}", text=f"{d.text}\n({len(docs)})"))
    return docs


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tests") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "servers.openai_server", "--latency", str(latency)],
                            stdout=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise SystemExit(f"test server did not start: {url!r}")
    return proc, url


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32, 64])
    ap.add_argument("--waves", type=int, default=8, help="Documents per level = waves * concurrency.")
    args = ap.parse_args()

    from equal.config import ExtractConfig, LLMConfig
    from equal.extract.openai import OpenAIExtractor

    docs = load_docs(args.waves * max(args.levels) + max(args.levels))
    proc, url = start_server(args.latency)
    rows = []
    try:
        for c in args.levels:
            cfg = ExtractConfig(name="openai", cache=False, llm=LLMConfig(
                base_url=url, model="bench", concurrency=c, timeout=30, max_tokens=512))
            with OpenAIExtractor(cfg) as ex:
                ex.extract(docs[-c:])  # warm up: start the loop and open c connections (not measured)
                batch = docs[: args.waves * c]
                t0 = time.perf_counter()
                results = ex.extract(batch)
                wall = time.perf_counter() - t0
                failed = sum(r.status == "failed" for r in results)
            rate = len(batch) / wall
            ideal = c / args.latency
            rows.append((c, len(batch), wall, rate, ideal, rate / ideal, failed))
    finally:
        proc.terminate()
        proc.wait(10)

    print(f"latency {args.latency * 1000:.0f} ms per request, {os.cpu_count()} CPUs")
    print(f"{'concurrency':>11} {'requests':>8} {'seconds':>8} {'req/s':>8} {'ideal':>8} {'ratio':>6} {'failed':>6}")
    for c, n, wall, rate, ideal, ratio, failed in rows:
        print(f"{c:>11} {n:>8} {wall:>8.2f} {rate:>8.1f} {ideal:>8.1f} {ratio:>6.2f} {failed:>6}")
    at32 = [r for r in rows if r[0] == 32]
    if at32 and at32[0][5] < 0.8:
        print("below 0.8 of ideal at concurrency 32", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
