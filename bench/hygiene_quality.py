"""What the hygiene quality rules keep, on a finished run folder: pairs by extractor rule before and after the
rules (decontamination and deduplication as the run's config says), drops by reason, and a seeded sample of kept
and dropped pairs to read.

    .venv/bin/python bench/hygiene_quality.py runs/demo [--sample 20] [--seed 0] [--chars 160]
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
from pathlib import Path

from equal.export import run_config
from equal.hygiene import QUALITY_REASONS, apply_hygiene
from equal.io import read_jsonl


def _short(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--sample", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chars", type=int, default=160)
    args = ap.parse_args(argv)
    run = Path(args.run_dir)
    pairs = list(read_jsonl(run / "dataset.jsonl"))
    _, cfg, _ = run_config(run)
    without = apply_hygiene(pairs, type(cfg)(**{**cfg.__dict__, "drop_rules": []}))
    with_rules = apply_hygiene(pairs, cfg)
    rule_of = [str(p.get("rule") or p.get("extractor")) for p in pairs]
    before = collections.Counter(rule_of[i] for i in without.keep)
    after = collections.Counter(rule_of[i] for i in with_rules.keep)
    print(f"{len(pairs)} pairs in dataset.jsonl; hygiene without quality rules keeps {len(without.keep)}, "
          f"with them {len(with_rules.keep)}")
    print(f"{'extractor rule':<24}{'before':>8}{'after':>8}")
    for rule, n in before.most_common():
        print(f"{rule:<24}{n:>8}{after.get(rule, 0):>8}")
    print("drops by reason:", {r: with_rules.counts[r] for r in QUALITY_REASONS})
    rng = random.Random(args.seed)
    dropped = [d for d in with_rules.dropped if d["reason"] in QUALITY_REASONS]
    for title, items in (("kept", [(i, "") for i in rng.sample(with_rules.keep, min(args.sample, len(with_rules.keep)))]),
                         ("dropped", [(d["index"], d["reason"]) for d in
                                      rng.sample(dropped, min(args.sample, len(dropped)))])):
        print(f"\n{args.sample} random {title} pairs (seed {args.seed}):")
        for i, reason in items:
            p = pairs[i]
            print(f"- [{rule_of[i]}{', ' + reason if reason else ''}] Q: {_short(p['question'], args.chars)}")
            print(f"    A: {_short(p['answer'], args.chars)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
