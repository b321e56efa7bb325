"""The pipeline's embedding stage against the bare model on the same texts, batch size and device, for each
embedding backend.

For each embedder (the shipped MiniLM run by torch, by ONNX Runtime in fp32 and in int8 -- ``embed.backend``
torch, onnx, onnx-int8 -- and the static model2vec model), in one process:

* pipeline: :func:`equal.vectors.embed_corpus` over the corpus (reading the documents from disk, the
  resumable memmap with its checkpointed chunks, the read-ahead thread), shared cache off;
* bare: ``SentenceTransformer.encode(texts, batch_size)`` (torch), the ONNX embedder's own ``encode``
  (tokenizer, session, pooling: no pipeline), ``StaticModel.encode(texts, batch_size)`` on the same texts
  already in memory.

Prints documents/s of each, the ratio pipeline / bare (the goal: at least 0.9), and each MiniLM pipeline's
rate against the torch pipeline's (``x torch``; issue 20's goal for onnx-int8: at least 2). The embedders
are timed alternately, ``--repeat`` times, and the best of each is kept, so a busy machine hurts all alike;
the ratio of process CPU times is printed too (steadier than wall time on a shared machine), and the load
average before and after. The ONNX exports are made on first use in the cache root (``--cache-dir``).

    python bench/embed.py [--corpus PATH] [--st-docs 512] [--backends torch,onnx,onnx-int8]
                          [--static-docs 50000] [--batch-size 64] [--sort-window 1024] [--device cuda]
                          [--repeat 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EQUAL_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _slice(corpus: Path, n: int, folder: Path) -> Path:
    """The first ``n`` documents of ``corpus`` (a file or shards), repeated if it has fewer, as one JSONL."""
    from equal.corpus import Corpus

    c = Corpus(corpus)
    out = folder / f"slice-{n}.jsonl"
    with open(out, "w", encoding="utf-8") as f:
        i = 0
        while i < n:
            for batch in c.iter_batches(4096, 0, min(len(c), n - i)):
                for d in batch:
                    f.write(json.dumps({"id": f"{d.id}-{i}", "text": d.text}, ensure_ascii=False) + "\n")
                    i += 1
    return out


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=str(DATA / "corpus.jsonl"))
    ap.add_argument("--st-docs", type=int, default=512, help="documents for MiniLM (0: skip it)")
    ap.add_argument("--backends", default="torch,onnx,onnx-int8", help="embed.backend values for MiniLM")
    ap.add_argument("--static-docs", type=int, default=50_000, help="documents for the static model (0: skip)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--sort-window", type=int, default=1024, help="embed.sort_window for the pipeline")
    ap.add_argument("--max-seq-length", type=int, default=256)
    ap.add_argument("--device", default=None)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--cache-dir", help="cache root holding (or to receive) the static model and the ONNX exports")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args()

    from equal import Config
    from equal.corpus import Corpus
    from equal.embed import make_embedder
    from equal.vectors import embed_corpus

    load_before = _loadavg()
    tmp = Path(tempfile.mkdtemp(prefix="equal-bench-embed-"))
    cases = [("all-MiniLM-L6-v2", b, args.st_docs) for b in args.backends.split(",") if b]
    cases.append(("static", "torch", args.static_docs))
    groups: dict[int, list] = {}  # documents -> the cases timed alternately on that slice
    for kind, backend, n in cases:
        if n <= 0:
            continue
        emb = make_embedder(kind, args.batch_size, args.max_seq_length, args.device, args.cache_dir or None,
                            backend=backend)
        groups.setdefault(n, []).append({"kind": kind, "backend": backend, "emb": emb})
    rows = []
    for n, group in groups.items():
        path = _slice(Path(args.corpus), n, tmp)
        corpus = Corpus(path)
        texts = [d.text for b in corpus.iter_batches(4096) for d in b]
        for c in group:
            c["cfg"] = Config(corpus=str(path)).replace(**{
                "embed.model": c["kind"], "embed.backend": c["backend"], "embed.batch_size": args.batch_size,
                "embed.max_seq_length": args.max_seq_length, "embed.sort_window": args.sort_window,
                "embed.cache": False, "embed.device": args.device, "embed.chunk_docs": max(args.sort_window, 4096),
                "extract.cache_dir": args.cache_dir})
            c["emb"].encode(texts[:8])  # warm up
            c.update(pipe=float("inf"), bare=float("inf"), cpu_pipe=float("inf"), cpu_bare=float("inf"))
        for r in range(args.repeat):
            for c in group:
                emb = c["emb"]
                out = tmp / f"{c['kind']}-{c['backend']}-{r}.npy"
                t, cpu = time.perf_counter(), time.process_time()
                embed_corpus(corpus, emb, out, c["cfg"], share=False, progress=False)
                c["pipe"] = min(c["pipe"], time.perf_counter() - t)
                c["cpu_pipe"] = min(c["cpu_pipe"], time.process_time() - cpu)
                out.unlink()
                t, cpu = time.perf_counter(), time.process_time()
                if c["kind"] == "static":
                    emb.model.encode(texts, max_length=emb.max_seq_length, batch_size=args.batch_size,
                                     use_multiprocessing=False)
                elif emb.kind == "onnx":
                    emb.encode(texts)
                else:
                    emb.model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False)
                c["bare"] = min(c["bare"], time.perf_counter() - t)
                c["cpu_bare"] = min(c["cpu_bare"], time.process_time() - cpu)
        torch_pipe = next((c for c in group if c["kind"] != "static" and c["emb"].kind == "st"), None)
        for c in group:
            emb = c["emb"]
            row = {"embedder": c["kind"], "backend": getattr(emb, "backend", c["backend"]),
                   "device": getattr(emb, "device", "cpu"), "docs": n, "batch_size": args.batch_size,
                   "sort_window": args.sort_window, "pipeline_docs_s": round(n / c["pipe"], 1),
                   "bare_docs_s": round(n / c["bare"], 1), "ratio": round(c["bare"] / c["pipe"], 3),
                   "cpu_ratio": round(c["cpu_bare"] / c["cpu_pipe"], 3)}
            if torch_pipe is not None and c["kind"] != "static":
                row["x_torch"] = round(torch_pipe["pipe"] / c["pipe"], 2)
                row["x_torch_cpu"] = round(torch_pipe["cpu_pipe"] / c["cpu_pipe"], 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    load_after = _loadavg()
    print(f"\nload average (1, 5, 15 min): {load_before} before, {load_after} after; {os.cpu_count()} CPUs")
    print("\n| embedder | backend | device | docs | pipeline docs/s | bare docs/s | ratio (wall) | ratio (CPU time) "
          "| x torch pipeline (wall / CPU) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        x = f"{r['x_torch']:.2f} / {r['x_torch_cpu']:.2f}" if "x_torch" in r else ""
        print(f"| {r['embedder']} | {r['backend']} | {r['device']} | {r['docs']:,} | {r['pipeline_docs_s']:,} | "
              f"{r['bare_docs_s']:,} | {r['ratio']:.2f} | {r['cpu_ratio']:.2f} | {x} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "loadavg_before": load_before,
                                               "loadavg_after": load_after}, indent=1))


if __name__ == "__main__":
    main()
