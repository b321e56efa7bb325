"""``equal eval``: greedy generation on a JSONL benchmark and its score.

Two kinds of benchmark:

* ``gsm8k``: items ``{question, answer}`` whose answer ends with ``#### <number>``; a completion is right
  when the final number it states (after ``####``, else its last number) equals the gold number.
* ``code``: pass@1 with one greedy completion per item, run against the item's tests in a sandbox
  with a time limit and no network (:mod:`equal.tune.coderun`). Items may be MBPP-style (``text`` or
  ``question``/``prompt`` plus ``test_list`` and optional ``test_setup_code``), HumanEval-style
  (``prompt``, ``test``, ``entry_point``), or ``{question, answer}`` with the ``assert`` lines in the
  question (the shape of the shared MBPP reference set).

Generation goes through a :class:`Generator` (prompts in, completions out). :class:`HFGenerator` batches
greedy decoding with transformers; :class:`VLLMGenerator` is used instead when vLLM is installed; a
:class:`FixedGenerator` returns given completions, so the scoring code can be checked on its own.
"""

from __future__ import annotations

from ..errors import UserError

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Protocol, Sequence

from ._io import read_records

Kind = Literal["gsm8k", "code"]

GSM8K_INSTRUCTION = "\nSolve the problem step by step. End with the final answer as '#### <number>'."
CODE_INSTRUCTION = "\nWrite the Python function in one ```python code block."


class BenchmarkError(UserError, ValueError):
    """A benchmark file or item cannot be read (a user error: no traceback)."""


@dataclass
class Item:
    id: str
    prompt: str  # the user message sent to the model
    gold: str  # gsm8k: the gold number; code: the test code
    entry_point: str | None = None  # code, HumanEval-style: the function the tests check
    code_prefix: str = ""  # code, HumanEval-style: the signature the completion continues
    setup: str = ""  # code: test setup run before the tests


# ---------------------------------------------------------------- numbers (GSM8K)
_NUM = re.compile(r"-?\$?\s?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def normalize_number(text: str) -> str | None:
    """``"$1,234.50"`` → ``"1234.5"``; ``None`` when ``text`` holds no number."""
    m = _NUM.search(text or "")
    if not m:
        return None
    s = m.group(0).replace("$", "").replace(",", "").replace(" ", "")
    try:
        value = float(s)
    except ValueError:
        return None
    if value.is_integer():
        return str(int(value))
    return repr(round(value, 6)).rstrip("0").rstrip(".")


def gold_number(answer: str) -> str | None:
    """The number after the last ``####`` of a GSM8K answer."""
    if "####" not in answer:
        return None
    return normalize_number(answer.rsplit("####", 1)[1])


def predicted_number(completion: str) -> str | None:
    """The final number a completion states: after its first ``####`` when present, else its last number."""
    if "####" in completion:
        tail = completion.split("####", 1)[1]
        n = normalize_number(tail.strip().splitlines()[0] if tail.strip() else "")
        if n is not None:
            return n
    nums = _NUM.findall(completion or "")
    return normalize_number(nums[-1]) if nums else None


# ---------------------------------------------------------------- code
_FENCE = re.compile(r"```(?:python|py|Python)?[ \t]*\n(.*?)(?:```|\Z)", re.S)
_ASSERT = re.compile(r"^\s*assert .*$", re.M)


def extract_code(completion: str) -> str:
    """The first fenced code block of a completion, else the completion itself."""
    m = _FENCE.search(completion or "")
    return (m.group(1) if m else completion or "").strip("\n")


def code_program(item: Item, completion: str) -> str:
    """The program that passes when ``completion`` solves ``item``: solution, setup, then the tests."""
    code = extract_code(completion)
    if item.entry_point:  # HumanEval: the completion continues the prompt, unless it restates the function
        if not re.search(rf"^\s*def {re.escape(item.entry_point)}\s*\(", code, re.M):
            code = item.code_prefix + code
        return f"{code}\n\n{item.setup}\n{item.gold}\n\ncheck({item.entry_point})\n"
    return f"{code}\n\n{item.setup}\n{item.gold}\n"


# ---------------------------------------------------------------- benchmarks
def load_benchmark(path: str | os.PathLike, kind: Kind, limit: int | None = None) -> list[Item]:
    p = Path(path)
    if not p.is_file():
        raise BenchmarkError(f"benchmark file not found: {p}")
    items: list[Item] = []
    for i, rec in enumerate(read_records(p)):
        if limit is not None and len(items) >= limit:
            break
        item_id = str(rec.get("task_id", rec.get("id", i)))
        items.append(_gsm8k_item(rec, item_id, p, i) if kind == "gsm8k" else _code_item(rec, item_id, p, i))
    if not items:
        raise BenchmarkError(f"{p} holds no items")
    return items


def _gsm8k_item(rec: dict, item_id: str, p: Path, i: int) -> Item:
    question, answer = rec.get("question"), str(rec.get("answer", ""))
    gold = gold_number(answer)
    if not question or gold is None:
        raise BenchmarkError(f"{p} line {i + 1}: a gsm8k item needs 'question' and an 'answer' ending '#### <number>'")
    return Item(id=item_id, prompt=str(question).strip() + GSM8K_INSTRUCTION, gold=gold)


def _code_item(rec: dict, item_id: str, p: Path, i: int) -> Item:
    if rec.get("entry_point") and rec.get("test") and rec.get("prompt"):  # HumanEval
        prompt = str(rec["prompt"])
        return Item(id=item_id, gold=str(rec["test"]), entry_point=str(rec["entry_point"]), code_prefix=prompt,
                    prompt="Complete this Python function:\n```python\n" + prompt + "\n```" + CODE_INSTRUCTION)
    text = str(rec.get("text") or rec.get("question") or rec.get("prompt") or "")
    tests = rec.get("test_list")
    if isinstance(tests, list) and tests:  # MBPP
        test_code = "\n".join(map(str, tests))
        prompt = f"{text.strip()}\nYour code should pass these tests:\n\n{test_code}"
        setup = str(rec.get("test_setup_code") or "")
    else:  # {question, answer} with the asserts inside the question
        asserts = _ASSERT.findall(text)
        if not asserts:
            raise BenchmarkError(f"{p} line {i + 1}: a code item needs tests ('test_list', HumanEval 'test', "
                                 "or assert lines in the question)")
        test_code, prompt, setup = "\n".join(a.strip() for a in asserts), text.strip(), ""
    if not text.strip():
        raise BenchmarkError(f"{p} line {i + 1}: a code item needs a 'text', 'question' or 'prompt'")
    return Item(id=item_id, prompt=prompt + CODE_INSTRUCTION, gold=test_code, setup=setup)


# ---------------------------------------------------------------- generators
class Generator(Protocol):
    name: str

    def generate(self, prompts: Sequence[str]) -> list[str]:
        """One greedy completion per user prompt, in order."""
        ...


@dataclass
class FixedGenerator:
    """Returns given completions (by prompt, or in order): a model stub of known answers."""

    completions: dict[str, str] | list[str]
    name: str = "fixed"

    def generate(self, prompts: Sequence[str]) -> list[str]:
        if isinstance(self.completions, dict):
            return [self.completions[p] for p in prompts]
        if len(self.completions) != len(prompts):
            raise ValueError(f"{len(self.completions)} fixed completions for {len(prompts)} prompts")
        return list(self.completions)


class HFGenerator:
    """Batched greedy decoding with a transformers model (left padding, the tokenizer's chat template)."""

    def __init__(self, model, tokenizer, max_new_tokens: int = 256, batch_size: int = 8, name: str = "transformers"):
        self.model, self.tok = model, tokenizer
        self.max_new_tokens, self.batch_size, self.name = max_new_tokens, batch_size, name
        self.tok.padding_side = "left"

    def _text(self, prompt: str) -> str:
        if getattr(self.tok, "chat_template", None):
            return self.tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                add_generation_prompt=True)
        return prompt + "\n"

    def generate(self, prompts: Sequence[str]) -> list[str]:
        import torch

        device = next(self.model.parameters()).device
        stop = [t for t in {self.tok.eos_token_id, self.tok.convert_tokens_to_ids("<|im_end|>")}
                if isinstance(t, int) and t >= 0 and t != self.tok.unk_token_id]
        out: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            texts = [self._text(p) for p in prompts[start:start + self.batch_size]]
            enc = self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.inference_mode():
                gen = self.model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=self.max_new_tokens, do_sample=False,
                                          eos_token_id=stop or None, pad_token_id=self.tok.pad_token_id)
            new = gen[:, enc["input_ids"].shape[1]:]
            out.extend(self.tok.batch_decode(new, skip_special_tokens=True))
        return out


class VLLMGenerator:  # pragma: no cover - needs vLLM and a GPU
    """Greedy decoding with vLLM (a merged model folder; GGUF bases are loaded by vLLM directly)."""

    def __init__(self, model_path: str, tokenizer_path: str | None = None, max_new_tokens: int = 256,
                 gguf_file: str | None = None):
        from vllm import LLM, SamplingParams

        path = str(Path(model_path) / gguf_file) if gguf_file else model_path
        self.llm = LLM(model=path, tokenizer=tokenizer_path or model_path)
        self.params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
        self.name = "vllm"

    def generate(self, prompts: Sequence[str]) -> list[str]:
        convs = [[{"role": "user", "content": p}] for p in prompts]
        return [o.outputs[0].text for o in self.llm.chat(convs, self.params, use_tqdm=False)]


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


# ---------------------------------------------------------------- scoring
@dataclass
class EvalResult:
    kind: str
    score: float
    n: int
    correct: int
    items: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        return asdict(self)


def score_completions(items: Sequence[Item], completions: Sequence[str], kind: Kind,
                      timeout: float = 10.0, unsafe_exec: bool = False) -> list[dict[str, Any]]:
    """Per-item results (``correct`` and what it was judged on) for completions already generated.

    Code runs in :mod:`equal.tune.coderun`'s sandbox; where it cannot be made this raises
    :class:`~equal.tune.coderun.SandboxUnavailable`, unless ``unsafe_exec`` (then it runs unsandboxed).
    """
    from .coderun import require_sandbox, run_python

    if kind == "code" and not unsafe_exec:
        require_sandbox()

    results = []
    for item, completion in zip(items, completions, strict=True):
        if kind == "gsm8k":
            pred = predicted_number(completion)
            results.append({"id": item.id, "gold": item.gold, "prediction": pred, "correct": pred == item.gold,
                            "completion": completion})
        else:
            run = run_python(code_program(item, completion), timeout=timeout, unsafe=unsafe_exec)
            results.append({"id": item.id, "correct": run.passed, "status": run.status, "sandboxed": run.sandboxed,
                            "seconds": run.seconds, "completion": completion, "output": run.output[-500:]})
    return results


def evaluate(items: Sequence[Item], generator: Generator, kind: Kind, timeout: float = 10.0,
             say: Callable[[str], None] = lambda m: None, unsafe_exec: bool = False) -> EvalResult:
    """Generate one completion per item with ``generator`` and score them: ``score`` = share correct.

    For ``code``, the sandbox is checked before anything is generated (see :func:`score_completions`).
    """
    if kind == "code" and not unsafe_exec:
        from .coderun import require_sandbox

        require_sandbox()
    t0 = time.perf_counter()
    completions = generator.generate([it.prompt for it in items])
    gen_s = time.perf_counter() - t0
    say(f"generated {len(items)} completions in {gen_s:.1f}s ({generator.name})")
    results = score_completions(items, completions, kind, timeout=timeout, unsafe_exec=unsafe_exec)
    correct = sum(r["correct"] for r in results)
    n = len(results)
    return EvalResult(kind=kind, score=correct / n if n else 0.0, n=n, correct=correct, items=results,
                      meta={"generator": generator.name, "generation_seconds": round(gen_s, 2),
                            "seconds": round(time.perf_counter() - t0, 2)})


def make_generator(spec: str, max_new_tokens: int = 256, batch_size: int = 8, device: str | None = None,
                   backend: Literal["auto", "vllm", "transformers"] = "auto",
                   threads: int | None = None) -> tuple[Generator, dict[str, Any]]:
    """A generator for a base model spec or an ``equal train`` adapter folder: vLLM when installed, else transformers."""
    from .models import load_for_inference, pick_device, set_cpu_threads

    n_threads = set_cpu_threads(threads)

    use_vllm = backend == "vllm" or (backend == "auto" and vllm_available() and pick_device(device).startswith("cuda"))
    if use_vllm:  # pragma: no cover - needs vLLM and a GPU
        import tempfile

        from .models import is_adapter_dir, resolve

        if is_adapter_dir(spec):  # vLLM gets a merged copy of base + adapter
            model, tok, info = load_for_inference(spec, device="cpu", dtype="bfloat16")
            tmp = tempfile.mkdtemp(prefix="equal-merged-")
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            return VLLMGenerator(tmp, max_new_tokens=max_new_tokens), {**info, "generator": "vllm"}
        ref = resolve(spec)
        return VLLMGenerator(ref.path, max_new_tokens=max_new_tokens, gguf_file=ref.gguf_file), \
            {"base": ref.to_record(), "generator": "vllm"}
    model, tok, info = load_for_inference(spec, device=device)
    return HFGenerator(model, tok, max_new_tokens=max_new_tokens, batch_size=batch_size), \
        {**info, "generator": "transformers", "cpu_threads": n_threads}


def write_result(result: EvalResult, path: str | os.PathLike) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(result.to_record(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, p)
    return p

