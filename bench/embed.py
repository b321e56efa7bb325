"""The pipeline's embedding stage against the bare model on the same texts, batch size and device.

For each embedder (the shipped MiniLM through sentence-transformers, and the static model2vec model),
in one process:

* pipeline: :func:`equal.run.embed_corpus` over the corpus (reading the documents from disk, the
  resumable memmap with its checkpointed chunks, the read-ahead thread), shared cache off;
* bare: ``SentenceTransformer.encode(texts, batch_size)`` / ``StaticModel.encode(texts, batch_size)`` on
  the same texts already in memory.

Prints documents/s of each and the ratio pipeline / bare (the goal: at least 0.9). The two are timed
alternately, ``--repeat`` times, and the best of each is kept, so a busy machine hurts both alike; the
ratio of process CPU times is printed too (steadier than wall time on a shared machine).

    python bench/embed.py [--corpus PATH] [--st-docs 512] [--static-docs 50000] [--batch-size 64]
                          [--sort-window 1024] [--device cuda] [--repeat 2]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=str(DATA / "corpus.jsonl"))
    ap.add_argument("--st-docs", type=int, default=512, help="documents for MiniLM (0: skip it)")
    ap.add_argument("--static-docs", type=int, default=50_000, help="documents for the static model (0: skip)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--sort-window", type=int, default=1024, help="embed.sort_window for the pipeline")
    ap.add_argument("--max-seq-length", type=int, default=256)
    ap.add_argument("--device", default=None)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--cache-dir", help="cache root holding (or to receive) the distilled static model")
    args = ap.parse_args()

    from equal import Config
    from equal.corpus import Corpus
    from equal.embed import make_embedder
    from equal.run import embed_corpus

    tmp = Path(tempfile.mkdtemp(prefix="equal-bench-embed-"))
    rows = []
    for kind, n in (("all-MiniLM-L6-v2", args.st_docs), ("static", args.static_docs)):
        if n <= 0:
            continue
        path = _slice(Path(args.corpus), n, tmp)
        corpus = Corpus(path)
        texts = [d.text for b in corpus.iter_batches(4096) for d in b]
        cfg = Config(corpus=str(path)).replace(**{
            "embed.model": kind, "embed.batch_size": args.batch_size, "embed.max_seq_length": args.max_seq_length,
            "embed.sort_window": args.sort_window, "embed.cache": False, "embed.device": args.device,
            "embed.chunk_docs": max(args.sort_window, 4096), "extract.cache_dir": args.cache_dir})
        emb = make_embedder(kind, args.batch_size, args.max_seq_length, args.device, args.cache_dir or None)
        emb.encode(texts[:8])  # warm up
        best_pipe = best_bare = cpu_pipe = cpu_bare = float("inf")
        for r in range(args.repeat):
            out = tmp / f"{kind}-{r}.npy"
            t, c = time.perf_counter(), time.process_time()
            embed_corpus(corpus, emb, out, cfg, share=False, progress=False)
            best_pipe = min(best_pipe, time.perf_counter() - t)
            cpu_pipe = min(cpu_pipe, time.process_time() - c)
            t, c = time.perf_counter(), time.process_time()
            if kind == "static":
                emb.model.encode(texts, max_length=emb.max_seq_length, batch_size=args.batch_size,
                                 use_multiprocessing=False)
            else:
                emb.model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)
            best_bare = min(best_bare, time.perf_counter() - t)
            cpu_bare = min(cpu_bare, time.process_time() - c)
        row = {"embedder": kind, "device": getattr(emb, "device", "cpu"), "docs": n,
               "batch_size": args.batch_size, "sort_window": args.sort_window,
               "pipeline_docs_s": round(n / best_pipe, 1), "bare_docs_s": round(n / best_bare, 1),
               "ratio": round(best_bare / best_pipe, 3), "cpu_ratio": round(cpu_bare / cpu_pipe, 3)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| embedder | device | docs | pipeline docs/s | bare docs/s | ratio (wall) | ratio (CPU time) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['embedder']} | {r['device']} | {r['docs']:,} | {r['pipeline_docs_s']:,} | {r['bare_docs_s']:,} | "
              f"{r['ratio']:.2f} | {r['cpu_ratio']:.2f} |")


if __name__ == "__main__":
    main()
