"""Scale: `equal run` on an N-document sharded corpus made from the shared corpus.

Builds (once, kept in --data) an N-document corpus by recombining the shared corpus's paragraphs: each
new document takes a random run of paragraphs from one shared document and one or two paragraphs from
another document of the same source, so documents differ while keeping their topic. It is written as
JSONL shards of --shard-docs documents (the last --gz shards gzip-compressed). Then runs

    equal run --corpus SHARDS/ --embedder static --extractor heuristic --clusters 1000 --budget 0.01

in a child process and prints documents/s per stage (from summary.json's stage_seconds), the total wall
time and the child's peak RSS (``ru_maxrss``). The static model is distilled in a fresh cache folder, so
its distillation counts in the run's time, unless --cache-dir names one that holds it.

    python bench/scale.py --docs 100000 [--docs 1000000 ...] [--data runs/scale] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EQUAL_SHARED_DATA", ROOT.parent / "shared" / "data"))


def build_corpus(n: int, folder: Path, shard_docs: int, gz: int, seed: int = 0) -> Path:
    """``n`` recombined documents in shards under ``folder`` (reused when complete)."""
    done = folder / "DONE"
    if done.exists() and json.loads(done.read_text()).get("docs") == n:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("part-*"):
        old.unlink()
    docs = [json.loads(line) for line in open(DATA / "corpus.jsonl", encoding="utf-8")]
    paras = [[p for p in d["text"].split("\n\n") if p.strip()] for d in docs]
    by_source: dict[str, list[int]] = {}
    for i, d in enumerate(docs):
        by_source.setdefault(d["source"], []).append(i)
    src_of = [by_source[d["source"]] for d in docs]
    rng = np.random.default_rng(seed)
    n_shards = -(-n // shard_docs)
    t = time.perf_counter()
    for s in range(n_shards):
        lo, hi = s * shard_docs, min(n, (s + 1) * shard_docs)
        base = rng.integers(0, len(docs), hi - lo)
        other = rng.random(hi - lo)
        lines = []
        for j, b in enumerate(base.tolist()):
            ps = paras[b]
            a = int(rng.integers(0, len(ps)))
            take = ps[a: a + int(rng.integers(1, 5))]
            pool = src_of[b]
            for _ in range(1 + int(other[j] < 0.5)):
                o = paras[pool[int(rng.integers(0, len(pool)))]]
                take = take + [o[int(rng.integers(0, len(o)))]]
            rec = {"id": f"s{lo + j}", "text": "\n\n".join(take)[:6000], "source": docs[b]["source"],
                   "domain": docs[b]["domain"]}
            lines.append(json.dumps(rec, ensure_ascii=False))
        body = ("\n".join(lines) + "\n").encode("utf-8")
        if s >= n_shards - gz:
            (folder / f"part-{s:05d}.jsonl.gz").write_bytes(gzip.compress(body, compresslevel=1))
        else:
            (folder / f"part-{s:05d}.jsonl").write_bytes(body)
    done.write_text(json.dumps({"docs": n, "shards": n_shards, "seconds": round(time.perf_counter() - t, 1)}))
    return folder


def run_once(corpus: Path, out: Path, cache_dir: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "equal.cli", "run", "--corpus", str(corpus), "--reference",
           str(DATA / "reference_math.jsonl"), "--out", str(out), "--embedder", "static", "--extractor", "heuristic",
           "--clusters", "1000", "--budget", "0.01", "--cache-dir", str(cache_dir), "--restart", "-q", *extra]
    t = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if r.returncode != 0:
        raise SystemExit(f"equal run failed:\n{r.stderr[-4000:]}")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest child so far
    summary = json.loads((out / "summary.json").read_text())
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mib": peak_kib / 1024, "summary": summary}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, action="append", required=True, help="corpus size (repeatable)")
    ap.add_argument("--data", default=str(ROOT / "runs" / "scale"), help="where corpora and runs go")
    ap.add_argument("--shard-docs", type=int, default=50_000)
    ap.add_argument("--gz", type=int, default=1, help="the last this many shards are gzip-compressed")
    ap.add_argument("--cache-dir", help="cache root (default: a fresh one per run, so distillation counts)")
    ap.add_argument("--set", action="append", default=[], help="extra --set KEY=VALUE for equal run")
    args = ap.parse_args()
    extra = [x for kv in args.set for x in ("--set", kv)]
    root = Path(args.data)
    results = []
    for n in args.docs:
        t = time.perf_counter()
        corpus = build_corpus(n, root / f"corpus-{n}", args.shard_docs, args.gz)
        build_s = time.perf_counter() - t
        cache = Path(args.cache_dir) if args.cache_dir else root / f"cache-{n}-{os.getpid()}"
        res = run_once(corpus, root / f"run-{n}", cache, extra)
        s = res["summary"]
        secs = s["stage_seconds"]
        per_doc = {k: v for k, v in secs.items() if k in ("index", "embed", "align", "cluster")}
        print(f"\nN = {n:,} documents ({json.loads((corpus / 'DONE').read_text())['shards']} shards; corpus built "
              f"in {build_s:.0f} s, not counted)")
        print(f"  total wall time {res['wall_s']:.1f} s (CPU time {res['cpu_s']:.0f} s; load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the end), peak RSS {res['peak_rss_mib']:.0f} MiB")
        for k, v in secs.items():
            rate = f"{n / v:,.0f} docs/s" if k in per_doc and v > 0 else ""
            if k == "bandit" and v > 0:
                rate = f"{s['docs_bandit'] / v:,.0f} extracted docs/s"
            if k == "warmup" and v > 0 and s["docs_warmup"]:
                rate = f"{s['docs_warmup'] / v:,.0f} extracted docs/s"
            print(f"  {k:14s} {v:9.1f} s  {rate}")
        print(f"  k={s['plan']['k']}, {s['rounds']} rounds, {s['docs_extracted']} documents extracted, "
              f"{s['pairs']} pairs, final OT {s['final_ot']:.4f}")
        results.append({"docs": n, "wall_s": round(res["wall_s"], 1), "cpu_s": round(res["cpu_s"], 1),
                        "peak_rss_mib": round(res["peak_rss_mib"]),
                        "stage_seconds": secs})
    if len(results) > 1:
        a, b = results[0], results[-1]
        print(f"\ngrowth {a['docs']:,} -> {b['docs']:,} documents (x{b['docs'] / a['docs']:.0f}): wall time "
              f"x{b['wall_s'] / a['wall_s']:.1f}, peak RSS x{b['peak_rss_mib'] / a['peak_rss_mib']:.1f}")
    (root / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
