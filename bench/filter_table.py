"""An extraction table with only the pairs that pass the hygiene's quality rules: what a bandit whose reward
sees only pairs that can teach something would be shown.

`equal export` and `equal train` drop every pair that breaks `hygiene.drop_rules` (a bare heading as the
question, an answer of headings or links, too short), yet the bandit's reward, the warm-up and the alignment
see every extracted pair. Replaying a policy against the filtered table (`equal compare --table OUT`,
`bench/downstream.py --table OUT`) measures a reward that gives dropped pairs no credit: a pull whose pairs
are all dropped has no pairs, reward 0. A document left with no pair reads as `empty`. Zero-cost rankings pick
the same documents from either table, and train on the same pairs (hygiene drops the same ones).

    python bench/filter_table.py --table runs/table-B --out runs/table-B-kept

Prints the pairs and documents kept. The filtered table keeps the source table's key (embedder, corpus),
with `"quality_rules"` added to its extractor's fingerprint, so it never passes for the unfiltered one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def filter_table(src: str | Path, out: str | Path, hygiene=None) -> dict[str, int]:
    from equal.config import HygieneConfig
    from equal.experiments.table import ExtractionTable, write_table_pairs
    from equal.hygiene import quality_reason
    from equal.io import atomic_write_json

    hygiene = hygiene or HygieneConfig()
    t = ExtractionTable.load(src)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts = {"docs": len(t), "pairs": int(t.n_pairs.sum()), "kept_pairs": 0, "docs_with_pairs": 0,
              "docs_emptied": 0}
    with open(out / "docs.jsonl", "w") as docs, open(out / "vectors.f32", "wb") as vec:
        for r in range(len(t)):
            pairs = t._pairs[r]
            keep = [i for i, (q, a) in enumerate(pairs) if quality_reason(q, a, hygiene) is None]
            status = t.status[r]
            if status == "ok" and not keep:
                status = "empty"
                counts["docs_emptied"] += int(len(pairs) > 0)
            docs.write(json.dumps({"doc_id": t.doc_ids[r], "status": status, "tokens": int(t.tokens[r]),
                                   "pairs": [pairs[i] for i in keep]}, ensure_ascii=False) + "\n")
            if keep:
                rows = t.offsets[r] + np.asarray(keep, dtype=np.int64)
                vec.write(np.asarray(t.vectors[rows], dtype=np.float32).tobytes())
                counts["docs_with_pairs"] += 1
            counts["kept_pairs"] += len(keep)
    meta = json.loads(json.dumps(t.meta))
    meta["key"]["extractor"] = {**meta["key"]["extractor"], "quality_rules": list(hygiene.drop_rules)}
    meta["filtered_from"] = str(src)
    meta["complete"] = False
    atomic_write_json(out / "meta.json", meta)
    atomic_write_json(out / "progress.json", {"docs": len(t), "docs_bytes": (out / "docs.jsonl").stat().st_size,
                                              "vec_bytes": (out / "vectors.f32").stat().st_size})
    write_table_pairs(out, (out / "docs.jsonl").stat().st_size, meta)
    meta["complete"] = True
    atomic_write_json(out / "meta.json", meta)
    return counts


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--table", required=True, help="an extraction table (equal extract-all)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    c = filter_table(args.table, args.out)
    print(f"{args.out}: {c['kept_pairs']:,} of {c['pairs']:,} pairs pass the quality rules "
          f"({c['kept_pairs'] / max(c['pairs'], 1):.1%}); {c['docs_with_pairs']:,} of {c['docs']:,} documents keep "
          f"one or more ({c['docs_emptied']:,} emptied)")


if __name__ == "__main__":
    main()
