"""``equal run --dry-run``: what a run will cost, before it spends anything.

The estimate reads the corpus (to count its documents) and nothing else that a run writes: it sends no
request, creates no run folder and writes nothing into an existing one (it reads its checkpoint, to
estimate what a resume still has to do), and opens the extraction cache read-only.

* ``calls``: the documents the budget extracts, ``round(budget x N)`` (or the count), as the run's
  :class:`~equal.run.Plan` resolves it, less those an existing run folder has already extracted; retries
  and cache hits aside (a document is one request).
* ``prompt_tokens``: ``calls`` times the mean prompt length of a seeded sample of documents, each cut
  to ``llm.max_doc_tokens`` and put into the real prompt template, counted with the model's tokenizer
  (``llm.tokenizer``, through its chat template where it has one) or else the extractor's
  characters / 4 count.
* ``completion_tokens``: ``calls`` times the mean completion tokens of the extraction responses in the
  cache for this model (the cache's history), else :data:`DEFAULT_COMPLETION_TOKENS` (at most
  ``llm.max_tokens``); ``completion_tokens_max`` is the bound ``calls x llm.max_tokens``.
* ``cost``: at ``llm.price_prompt_per_mtok`` / ``price_completion_per_mtok``; None where no price is set.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from .config import Config

#: Completion tokens per extraction call assumed when the cache holds no response of the model.
DEFAULT_COMPLETION_TOKENS = 400
#: Documents whose prompts are counted.
SAMPLE_DOCS = 256
#: Most recent cache entries read for the completion history.
HISTORY_ROWS = 20_000


def _chat_tokens(tok: Any, prompt: str) -> int | None:
    """Tokens of ``prompt`` as one user message through the tokenizer's chat template (None: it has none)."""
    if not getattr(tok, "chat_template", None):
        return None
    try:
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=True,
                                      add_generation_prompt=True)
    except Exception:  # noqa: BLE001 - a template that fails to render: count the prompt alone
        return None
    if hasattr(ids, "keys") and "input_ids" in ids:
        ids = ids["input_ids"]
    if len(ids) and isinstance(ids[0], (list, tuple)):
        ids = ids[0]
    return len(ids)


def prompt_tokens(extractor: Any, text: str, template: str | None = None) -> int:
    """Prompt tokens of one document as the extractor would send it (cut, rendered, counted)."""
    from .extract.openai.prompt import render

    cut, _ = extractor.truncate(text)
    prompt = render(template or extractor.template, document=cut,
                    max_pairs=str(extractor.cfg.max_pairs_per_doc), pairs="")
    tok = extractor.load_tokenizer()
    if tok is not None:
        n = _chat_tokens(tok, prompt)
        if n is not None:
            return n
    return extractor.count_tokens(prompt)


def completion_history(cache_dir: str | None, model: str, limit: int = HISTORY_ROWS) -> dict[str, Any] | None:
    """Mean completion tokens of the cached extraction responses of ``model`` (the most recent ``limit``
    entries), read-only: ``{"responses", "mean_completion_tokens", "with_pairs"}``; None without history."""
    from .extract.cache import cache_path

    path = cache_path(cache_dir)
    if not path.is_file():
        return None
    try:
        # immutable: read without creating the -shm/-wal files beside the cache (a dry run writes nothing);
        # what a writer has not checkpointed yet is not seen, which an estimate can afford
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True, timeout=10)
        try:
            rows = con.execute("SELECT value FROM extractions ORDER BY created DESC LIMIT ?", (limit,)).fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return None
    tokens, with_pairs = [], 0
    for (blob,) in rows:
        try:
            v = json.loads(blob)
        except ValueError:
            continue
        if not isinstance(v, dict) or "pairs" not in v:  # refine responses hold no "pairs" key
            continue
        got = str(v.get("model") or "")
        if got and not (got == model or got.startswith(model) or model.startswith(got)):
            continue
        ct = int((v.get("usage") or {}).get("completion_tokens") or 0)
        if ct <= 0:
            continue
        tokens.append(ct)
        with_pairs += bool(v.get("pairs"))
    if not tokens:
        return None
    return {"responses": len(tokens), "mean_completion_tokens": float(np.mean(tokens)),
            "with_pairs": with_pairs / len(tokens)}


def _done_docs(out: Path) -> tuple[int, bool]:
    """Documents an existing run folder has committed, and whether it is finished (read only)."""
    ck_path = out / "state" / "checkpoint.json"
    if not ck_path.is_file():
        return 0, False
    try:
        ck = json.loads(ck_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0, False
    return int((ck.get("extraction") or {}).get("docs", 0)), "finalize" in (ck.get("done") or [])


def estimate(cfg: Config, sample: int = SAMPLE_DOCS, restart: bool = False) -> dict[str, Any]:
    """The dry-run estimate of the run ``cfg`` describes (see the module docstring); ``restart``: as if
    the run folder were started over (what it already holds is not subtracted)."""
    from .corpus import Corpus
    from .extract.openai.spend import spend_cost
    from .run.worklog import llm_usage
    from .sizing import Plan

    corpus = Corpus(cfg.corpus, cfg.corpus_options, index_dir=None, progress=False)
    n = len(corpus)
    plan = Plan.make(cfg, n)
    out = Path(cfg.out)
    done, finished = (0, False) if restart else _done_docs(out)
    docs = 0 if finished else max(0, plan.budget_docs - done)
    llm = cfg.extract.llm
    est: dict[str, Any] = {
        "calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost": None,
        "extractor": cfg.extract.name, "documents_total": n, "budget_documents": plan.budget_docs,
        "documents_done": done, "documents_to_extract": docs,
    }
    if cfg.extract.name != "openai":  # no LLM: nothing to pay
        est["cost"] = spend_cost(0, 0, llm)
        return est
    from .extract.openai.extractor import OpenAIExtractor

    ex = OpenAIExtractor(dataclasses.replace(cfg.extract, cache=False))  # no cache opened or created
    try:
        rows = np.arange(n) if n <= sample else np.sort(
            np.random.default_rng([cfg.seed, 0xD5]).choice(n, sample, replace=False))
        texts = [d.text for d in corpus.get(rows) if d.text.strip()]
        per_doc = [prompt_tokens(ex, t) for t in texts]
        history = completion_history(cfg.extract.cache_dir, llm.model) if cfg.extract.cache else None
        if history is not None:
            per_completion = min(history["mean_completion_tokens"], float(llm.max_tokens))
            source = f"cache: mean of {history['responses']} cached responses of {llm.model}"
        else:
            per_completion = float(min(DEFAULT_COMPLETION_TOKENS, llm.max_tokens))
            source = f"default: {per_completion:g} tokens per call (no cached response of {llm.model})"
        per_prompt = float(np.mean(per_doc)) if per_doc else 0.0
        calls = docs
        prompt = per_prompt * calls
        completion = per_completion * calls
        refine_calls = 0
        if llm.refine:  # a second request per document that gave pairs: its document, its pairs, the answer
            share = history["with_pairs"] if history is not None else 1.0
            refine_calls = int(round(calls * share))
            per_refine = float(np.mean([prompt_tokens(ex, t, ex.refine_template) for t in texts])) if texts else 0.0
            prompt += refine_calls * (per_refine + per_completion)
            completion += refine_calls * per_completion
        prompt_i, completion_i = int(round(prompt)), int(round(completion))
        est.update({
            "calls": calls, "prompt_tokens": prompt_i, "completion_tokens": completion_i,
            "total_tokens": prompt_i + completion_i, "cost": spend_cost(prompt_i, completion_i, llm),
            "refine_calls": refine_calls,
            "model": llm.model, "sample_documents": len(per_doc),
            "prompt_tokens_per_call": round(per_prompt, 1), "completion_tokens_per_call": round(per_completion, 1),
            "tokenizer": llm.tokenizer or "characters / 4",
            "completion_source": source,
            "completion_tokens_max": (calls + refine_calls) * llm.max_tokens,
        })
        est["cost_max"] = spend_cost(prompt_i, est["completion_tokens_max"], llm)
    finally:
        ex.close()
    if done:
        est["spent_so_far"] = llm_usage(out, cfg)
    caps = {k: getattr(llm, k) for k in ("max_cost", "max_tokens_total") if getattr(llm, k) is not None}
    if caps:
        spent = est.get("spent_so_far") or {"total_tokens": 0, "cost": 0.0}
        over = []
        if "max_tokens_total" in caps and spent["total_tokens"] + est["total_tokens"] > caps["max_tokens_total"]:
            over.append("max_tokens_total")
        if "max_cost" in caps and (spent["cost"] or 0.0) + (est["cost"] or 0.0) > caps["max_cost"]:
            over.append("max_cost")
        est["caps"] = {**caps, "estimate_exceeds": over}
    return est


def format_estimate(est: dict[str, Any]) -> str:
    """A short human-readable summary of :func:`estimate`."""
    lines = ["dry run: nothing was sent and no run folder was written",
             f"documents:  {est['documents_to_extract']} to extract (budget {est['budget_documents']} of "
             f"{est['documents_total']}" + (f", {est['documents_done']} already done" if est["documents_done"] else "")
             + ")"]
    if est["extractor"] != "openai":
        lines.append(f"extractor:  {est['extractor']} (no LLM requests, no tokens)")
        return "\n".join(lines) + "\n"
    lines.append(f"calls:      {est['calls']} extraction requests" +
                 (f" + {est['refine_calls']} refine requests" if est.get("refine_calls") else "") +
                 " (retries and cache hits aside)")
    lines.append(f"prompt:     {est['prompt_tokens']:,} tokens ({est['prompt_tokens_per_call']:g} per call on "
                 f"{est['sample_documents']} sampled documents; counted with {est['tokenizer']})")
    lines.append(f"completion: {est['completion_tokens']:,} tokens (at most {est['completion_tokens_max']:,}); "
                 f"{est['completion_source']}")
    if est["cost"] is None:
        lines.append("cost:       unknown (set extract.llm.price_prompt_per_mtok / price_completion_per_mtok)")
    else:
        lines.append(f"cost:       {est['cost']:.4f} (at most {est['cost_max']:.4f})")
    caps = est.get("caps")
    if caps:
        names = ", ".join(f"{k}={v:g}" for k, v in caps.items() if k != "estimate_exceeds")
        lines.append(f"caps:       {names}" + (f"; the estimate exceeds {', '.join(caps['estimate_exceeds'])}: "
                                                   "the run will stop there" if caps["estimate_exceeds"] else ""))
    return "\n".join(lines) + "\n"
