"""Split a corpus into two halves by source, so that no source is in both: a second corpus to check on.

Tuning on one corpus and checking on another is the only honest test of a default (issue 16): a split of the
shared corpus by document would put the same books, manuals and exercise sets on both sides. Sources are
assigned greedily, largest first within each label of ``--balance-field`` (default ``domain``, read here only
to balance the halves, never by the pipeline), each to the half that holds fewer documents of that label; ties
go to half A. The assignment is a pure function of the per-source counts, so it is the same on every machine.

    python bench/split_by_source.py --corpus ../shared/data/corpus.jsonl --out runs/halves
    # -> runs/halves/A.jsonl, runs/halves/B.jsonl, runs/halves/split.json (which source went where)
"""

from __future__ import annotations

import argparse
import collections
import json
import os
from pathlib import Path


def assign(counts: dict[tuple[str, str], int]) -> dict[str, str]:
    """``{source: "A" | "B"}`` from ``{(label, source): documents}``; a source's label is its majority label."""
    by_source: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for (label, source), n in counts.items():
        by_source[source][label] += n
    major = {s: c.most_common(1)[0][0] for s, c in by_source.items()}
    size = {s: sum(c.values()) for s, c in by_source.items()}
    half: dict[str, str] = {}
    held: dict[tuple[str, str], int] = collections.Counter()
    for s in sorted(by_source, key=lambda s: (major[s], -size[s], s)):
        h = "A" if held[(major[s], "A")] <= held[(major[s], "B")] else "B"
        half[s] = h
        held[(major[s], h)] += size[s]
    return half


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", required=True, help="a JSONL corpus with a source field")
    ap.add_argument("--out", required=True)
    ap.add_argument("--source-field", default="source")
    ap.add_argument("--balance-field", default="domain")
    args = ap.parse_args(argv)
    rows = [json.loads(line) for line in open(args.corpus, encoding="utf-8") if line.strip()]
    counts = collections.Counter((str(r.get(args.balance_field)), str(r[args.source_field])) for r in rows)
    half = assign(counts)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = {h: open(out / f"{h}.jsonl", "w", encoding="utf-8") for h in "AB"}
    n = collections.Counter()
    for r in rows:
        h = half[str(r[args.source_field])]
        files[h].write(json.dumps(r, ensure_ascii=False) + "\n")
        n[(h, str(r.get(args.balance_field)))] += 1
    for f in files.values():
        f.close()
    summary = {"corpus": os.path.relpath(args.corpus), "sources": half,
               "documents": {h: {k: v for (hh, k), v in sorted(n.items()) if hh == h} for h in "AB"}}
    (out / "split.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    for h in "AB":
        print(h, sum(summary["documents"][h].values()), summary["documents"][h],
              sorted(s.split(" (")[0] for s, x in half.items() if x == h))


if __name__ == "__main__":
    main()
