#!/usr/bin/env bash
# GPU check of `equal train` / `equal eval` (issue 10): a tiny Llama-shaped model built from a config (no
# download), a few LoRA steps on CUDA with bf16, then a short evaluation; prints where the weights live and
# fails unless the GPU path was taken (device cuda, bf16 where the GPU has it, parameters on cuda, finite
# losses that fall). Needs the train extra: make setup (or pip install -e '.[train]').
#   bash bench/train_gpu.sh            # OUT=runs/train-gpu, STEPS=8
#   DEVICE=cpu bash bench/train_gpu.sh # the same steps on a CPU (checks the script, not the GPU path)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DATA=${EQUAL_SHARED_DATA:-../shared/data}
OUT=${OUT:-runs/train-gpu}
STEPS=${STEPS:-8}
DEVICE=${DEVICE:-cuda}
export DEVICE
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY - "$OUT" "$DATA" <<'PYEOF'
import json, sys, torch
from pathlib import Path
from equal.tune.tiny import make_tiny_model
out, data = Path(sys.argv[1]), Path(sys.argv[2])
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      "bf16", torch.cuda.is_available() and torch.cuda.is_bf16_supported())
import os
assert os.environ["DEVICE"] != "cuda" or torch.cuda.is_available(), "no CUDA device visible"
make_tiny_model(out / "tiny", hidden=256, layers=4, heads=8)
lines = (data / "reference_math.jsonl").read_text().splitlines()
with open(out / "messages.jsonl", "w") as f:  # 64 GSM8K pairs as chat messages
    for line in lines[:64]:
        r = json.loads(line)
        f.write(json.dumps({"messages": [{"role": "user", "content": r["question"]},
                                         {"role": "assistant", "content": r["answer"]}]}) + "\n")
    (out / "gsm8k8.jsonl").write_text("\n".join(lines[-8:]) + "\n")
PYEOF
time $PY -m equal.cli train "$OUT/messages.jsonl" --model "$OUT/tiny" --out "$OUT/adapter" --max-steps "$STEPS" \
  --device "$DEVICE" --lr 0.005 --set eval_steps=4 --set max_train_examples=8 --batch-size 8
$PY - "$OUT" <<'PYEOF'
import json, math, sys
from pathlib import Path
out = Path(sys.argv[1])
s = json.loads((out / "adapter/train_summary.json").read_text())
log = [json.loads(l) for l in (out / "adapter/train_log.jsonl").read_text().splitlines()]
steps = [r["loss"] for r in log if "loss" in r]
evals = [r["eval_loss"] for r in log if "eval_loss" in r]
print(json.dumps({k: s[k] for k in ("device", "dtype", "param_device", "steps", "first_loss", "last_loss",
                                    "eval_loss", "seconds", "tokens_per_second", "peak_gpu_memory_gib")}, indent=2))
print("config:", {k: s["config"][k] for k in ("bf16", "gradient_checkpointing", "batch_size", "max_length")})
import os, torch
dev = os.environ["DEVICE"]
assert s["device"] == dev and s["param_device"].startswith(dev), f"training ran on {s['param_device']}, not {dev}"
if dev == "cuda":
    assert s["dtype"] == ("bfloat16" if torch.cuda.is_bf16_supported() else "float32"), s["dtype"]
    assert s["config"]["gradient_checkpointing"] and s["peak_gpu_memory_gib"], "GPU defaults not applied"
assert all(math.isfinite(x) for x in steps + evals) and evals, "non-finite or missing losses"
assert steps[-1] < steps[0], f"loss did not fall: {steps}"
print(f"train path on {dev}: OK (batch of 8 pairs repeated; loss {steps[0]:.3f} -> {steps[-1]:.3f})")
PYEOF
time $PY -m equal.cli eval "$OUT/adapter" --benchmark "$OUT/gsm8k8.jsonl" --kind gsm8k --max-new-tokens 16 \
  --backend transformers --device "$DEVICE" --out "$OUT/eval.json"
$PY -c "import json; r=json.load(open('$OUT/eval.json')); m=r['meta']; print('eval on', m['device'], m['dtype'], 'n', r['n'], 'score', r['score']); assert m['device']=='$DEVICE' and r['n']==8"
echo "check on $DEVICE: OK"
