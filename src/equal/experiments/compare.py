"""Replays: every selection strategy against one extraction table, with no LLM call.

``equal compare`` splits the reference into the part the runs get and an
evaluation part they never see, then replays each policy at each budget and
seed through the same functions a live ``equal run`` calls (warm-up rows,
alignment, k-means, arm priors, the selection loop), with a
:class:`~equal.select.envs.ReplayEnv` in place of the extractor. A replay of a
strategy picks exactly the documents a live run with the same config and seed
picks.

Metrics, per run (evaluation embedder: the base embedder, never trained by selection):

* ``ot``: exact EMD, cosine cost, between the selected pairs (at most 2,000, sampled) and the evaluation reference;
* ``on_target``: share of the extracted documents (warm-up included) whose label is the target;
* ``clusters`` / ``entropy``: how many clusters of a fixed evaluation k-means the extracted documents
  come from, and the entropy (nats) of that spread; ``distinct3``: distinct word 3-grams of the questions
  over all of them;
* ``calls``, ``pairs``, ``tokens``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..align import apply_adapter
from ..config import Config
from ..embed import map_rows
from ..io import atomic_write_json, atomic_write_text
from ..score import Scorer, ot_distance
from ..select import recipe
from ..select.envs import ReplayEnv
from ..select.loop import LoopState
from ..select.setup import Inputs, Warmup, build_selection, run_selection
from ..sizing import Plan
from .table import ExtractionTable, TableError

EVAL_MAX_PAIRS = 2000
METRICS = ("ot", "on_target", "calls", "pairs", "tokens", "clusters", "entropy", "distinct3")


@dataclass
class ReplayContext:
    """What every replay on one corpus, table and reference shares (built once)."""

    corpus: Any
    table: ExtractionTable
    rows_to_table: np.ndarray
    base: np.ndarray  # corpus vectors (memmap)
    run_pairs: list  # the reference items the runs are given
    encode: Any
    work_dir: Path
    prior_vecs: np.ndarray | None = None
    sim: np.ndarray | None = None
    _sims: dict = field(default_factory=dict)
    _rank_cache: dict = field(default_factory=dict)
    _reward: dict = field(default_factory=dict)
    _texts: list | None = None
    _kept: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.base)

    def reward_vectors(self, cfg: Config) -> np.ndarray:
        from ..vectors import reference_vectors

        key = (cfg.seed, cfg.score.reference_sample, cfg.score.prior_sample)
        if key not in self._reward:
            path = self.work_dir / "reference_n{}_s{}_r{}_p{}.npz".format(len(self.run_pairs), *key)
            if path.exists():  # kept between compare runs on the same split
                z = np.load(path)
                reward, prior = z["reward"], z["prior"]
            else:
                from ..io import atomic_save_npz

                # the prior sample does not depend on the seed: embed it once
                reward, prior = reference_vectors(self.encode, self.run_pairs, cfg,
                                                  only="reward" if self.prior_vecs is not None else None)
                prior = self.prior_vecs if prior is None else prior
                atomic_save_npz(path, reward=reward, prior=prior)
            self._reward[key] = reward
            if self.prior_vecs is None:
                self.prior_vecs = prior
                self.sim = recipe.similarity_scores(self.base, prior)
        return self._reward[key]

    def similarity(self, kind: str, k: int) -> np.ndarray:
        if kind == "mean":
            return self.sim
        if k not in self._sims:  # per k, each kind once (mix from the kept mean and knn scores)
            self._sims[k] = recipe.Similarities(self.base, self.prior_vecs, k, known={"mean": self.sim})
        return self._sims[k](kind)

    def kept(self, rules) -> np.ndarray | None:
        """Per table pair, whether it passes the quality rules ``rules`` (``extract.drop_rules``); None for none."""
        from ..extract.rules import kept_mask

        key = tuple(rules or ())
        if not key:
            return None
        if key not in self._kept:
            self._kept[key] = kept_mask(self.table.all_pairs(), key)
        return self._kept[key]

    def selected_pairs(self, rep: "Replay", cfg: Config) -> list:
        """The pairs of a replay's documents, in extraction order, as the run would have kept them."""
        env = ReplayEnv(self.table, self.rows_to_table, with_pairs=True, keep=self.kept(cfg.extract.drop_rules))
        return [p for ps in env.pull(rep.rows).pairs for p in ps]

    def doc_texts(self) -> list[str]:
        if self._texts is None:
            self._texts = [d.text for b in self.corpus.iter_batches(4096) for d in b]
        return self._texts


@dataclass
class Replay:
    """What a replayed run extracted: corpus rows in extraction order and the pairs' vectors."""

    rows: np.ndarray
    warmup: int
    vectors: np.ndarray
    rounds: list[tuple[int, int, list[int]]]  # (round, arm, rows)
    kept: np.ndarray | None = None  # per table pair, whether extract.drop_rules kept it (None: no rules)


class ReplaySteps:
    """The recipe's steps against an extraction table, in memory (:class:`equal.select.setup.Steps`)."""

    def __init__(self, cfg: Config, ctx: ReplayContext, env: ReplayEnv) -> None:
        self.cfg, self.ctx, self.env = cfg, ctx, env

    def warmup(self, rows: np.ndarray) -> Warmup:
        return Warmup.from_pull(rows, self.env.pull(rows))

    def align(self, warm: Warmup, mode: str, adapter) -> tuple[np.ndarray, Any]:
        if mode == "full":
            raise ValueError("align.mode=full cannot be replayed (it re-embeds the corpus with a tuned model); "
                             "use adapter or none")
        if mode == "none" or not len(warm.indices):
            return self.ctx.base, None
        W = adapter()
        return map_rows(self.ctx.base, self.ctx.work_dir / "aligned.npy", apply_adapter(W)), W

    def cluster(self, vectors: np.ndarray, compute) -> np.ndarray:
        c = compute()
        return np.zeros(self.ctx.n, dtype=np.int32) if c is None else c.labels

    def ranking(self, compute) -> np.ndarray:
        return compute()

    def start(self, policy, pool, labels, warm, init, fresh) -> LoopState:  # noqa: ARG002
        init()
        return fresh()


def replay(cfg: Config, ctx: ReplayContext) -> Replay:
    """Run the selection of ``cfg`` against the extraction table, exactly as ``equal run`` would: the same
    recipe (:func:`equal.select.setup.build_selection`) with the table in place of the extractor."""
    if recipe.align_mode(cfg.policy, cfg.align.mode) == "full":
        raise ValueError("align.mode=full cannot be replayed (it re-embeds the corpus with a tuned model); "
                         "use adapter or none")
    plan = Plan.make(cfg, ctx.n)
    scorer = Scorer(ctx.reward_vectors(cfg), None, cfg.score.metric, cfg.score.method, cfg.score.sinkhorn_reg)
    kept = ctx.kept(cfg.extract.drop_rules)
    env = ReplayEnv(ctx.table, ctx.rows_to_table, keep=kept)
    inputs = Inputs(cfg=cfg, plan=plan, base=ctx.base, prior_vecs=ctx.prior_vecs,
                    similarity=lambda kind: ctx.similarity(kind, cfg.bandit.similarity_k), scorer=scorer,
                    dim=ctx.table.dim, doc_texts=ctx.doc_texts, ref_texts=[p.text() for p in ctx.run_pairs],
                    doc_lengths=lambda rows: [len(d.text) for d in ctx.corpus.get(rows)], rank_cache=ctx._rank_cache)
    sel = build_selection(inputs, ReplaySteps(cfg, ctx, env))
    rows, vecs, rounds = [sel.warm.indices], [sel.warm.vectors], []

    def on_round(rr, state):  # noqa: ARG001
        for ap in rr.pulls:
            rows.append(ap.result.rows)
            vecs.append(ap.result.vectors)
            rounds.append((rr.round, ap.arm, ap.result.rows.tolist()))

    run_selection(sel, env, cfg, plan, on_round=on_round)
    return Replay(rows=np.concatenate(rows).astype(np.int64), warmup=len(sel.warm.indices),
                  vectors=np.concatenate(vecs) if vecs else np.zeros((0, ctx.table.dim), np.float32), rounds=rounds,
                  kept=kept)


# ------------------------------------------------------------------ metrics
def distinct_ngrams(texts: Sequence[str], n: int = 3) -> float:
    """Distinct word n-grams over all word n-grams of ``texts`` (1.0: no repeats; nan: none)."""
    seen, total = set(), 0
    for t in texts:
        w = re.findall(r"\w+", t.lower())
        grams = list(zip(*(w[i:] for i in range(n))))
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else float("nan")


def evaluate(rep: Replay, ctx: ReplayContext, eval_vecs: np.ndarray, eval_labels: np.ndarray,
             labels: dict[str, Any] | None, target: str | None, seed: int) -> dict[str, Any]:
    vec = rep.vectors
    if len(vec) > EVAL_MAX_PAIRS:
        vec = vec[np.sort(np.random.default_rng([seed, 0xE7A]).choice(len(vec), EVAL_MAX_PAIRS, replace=False))]
    trow = ctx.rows_to_table[rep.rows]
    counts = np.bincount(eval_labels[rep.rows], minlength=int(eval_labels.max()) + 1)
    p = counts[counts > 0] / max(1, counts.sum())
    row = {"calls": int(len(rep.rows)), "warmup_calls": int(rep.warmup), "pairs": int(len(rep.vectors)),
           "tokens": int(ctx.table.tokens[trow].sum()),
           "ot": ot_distance(vec, eval_vecs, "cosine", "emd") if len(vec) else float("nan"),
           "clusters": int((counts > 0).sum()), "entropy": float(-(p * np.log(p)).sum()),
           "distinct3": distinct_ngrams(ctx.table.questions_of(trow, rep.kept))}
    if labels is not None and target is not None:
        ids = [ctx.table.doc_ids[int(t)] for t in trow]
        row["on_target"] = float(np.mean([labels.get(i) == target for i in ids])) if ids else float("nan")
        bandit = ids[rep.warmup:]
        row["on_target_after_warmup"] = float(np.mean([labels.get(i) == target for i in bandit])) if bandit \
            else float("nan")
    return row


# ------------------------------------------------------------------ the grid
def split_reference(n_items: int, eval_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(run rows, evaluation rows): a fixed split; the evaluation part is at most half the reference."""
    m = min(eval_size, n_items // 2)
    perm = np.random.default_rng(0xE5A1).permutation(n_items)
    return np.sort(perm[m:]), np.sort(perm[:m])


def build_context(cfg: Config, table_dir: str | Path, out: Path, eval_size: int, progress: bool):
    from ..corpus import Corpus
    from ..embed import from_config
    from ..reference import load_reference
    from ..vectors import cache_root, embed_corpus

    table = ExtractionTable.load(table_dir)
    corpus = Corpus(cfg.corpus, cfg.corpus_options, index_dir=out / "state", progress=progress)
    emb = from_config(cfg.embed, cache_root(cfg), progress)
    if table.meta["key"].get("embedder") != emb.fingerprint():
        raise TableError(f"the table in {table_dir} was embedded with another model, token limit or backend than "
                         f"embed.model={cfg.embed.model}, embed.max_seq_length={cfg.embed.max_seq_length}, "
                         f"embed.backend={cfg.embed.backend}")
    ids = [d.id for b in corpus.iter_batches(4096) for d in b]
    rows_to_table = table.rows_for(ids)
    if (rows_to_table < 0).any():
        raise TableError(f"{int((rows_to_table < 0).sum())} corpus documents are missing from the table "
                         f"{table_dir}; build it with `equal extract-all` on this corpus")
    base = embed_corpus(corpus, emb, out / "state" / "doc_vectors.npy", cfg, progress=progress)
    ref = load_reference(cfg.reference)
    run_rows, eval_rows = split_reference(len(ref.pairs), eval_size)
    run_pairs = [ref.pairs[int(i)] for i in run_rows]
    eval_pairs = [ref.pairs[int(i)] for i in eval_rows]
    for name, pairs in (("reference_run.jsonl", run_pairs), ("reference_eval.jsonl", eval_pairs)):
        atomic_write_text(out / name, "".join(json.dumps({"question": p.question, "answer": p.answer},
                                                         ensure_ascii=False) + "\n" for p in pairs))
    eval_vecs = emb.encode([p.text() for p in eval_pairs])
    ctx = ReplayContext(corpus=corpus, table=table, rows_to_table=rows_to_table, base=base, run_pairs=run_pairs,
                        encode=emb.encode, work_dir=out / "state")
    return ctx, eval_vecs


def compare(cfg: Config, table_dir: str | Path, policies: list[str], budgets: list[float], seeds: int,
            out: str | Path, label_field: str | None = None, target: str | None = None, eval_size: int = 500,
            progress: bool = True) -> Path:
    """Replay ``policies`` × ``budgets`` × seeds ``0..seeds-1``; write results.csv, results.md and plots."""
    from ..cluster import kmeans
    from ..progress import bar

    if policies == ["all"]:
        policies = list(recipe.strategies())
    specs = {p: parse_spec(p) for p in policies}
    out = Path(out)
    (out / "state").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ctx, eval_vecs = build_context(cfg, table_dir, out, eval_size, progress)
    labels = None
    if label_field:
        labels = _labels(ctx.corpus, cfg, label_field)
    k_eval = int(max(2, round(math.sqrt(ctx.n))))
    eval_labels = kmeans(ctx.base, k_eval, 20, 0).labels
    setup_seconds = time.perf_counter() - t0
    rows: list[dict[str, Any]] = []
    jobs = [(p, b, s) for p in policies for b in (budgets if specs[p][0] != "full" else budgets[:1])
            for s in range(seeds) if not (specs[p][0] == "full" and s > 0)]
    with bar("replaying", total=len(jobs), enabled=progress) as tick:
        for policy, budget, seed in jobs:
            name, overrides = specs[policy]
            c = cfg.replace(**{**overrides, "policy": name, "budget": budget, "seed": seed})
            t = time.perf_counter()
            rep = replay(c, ctx)
            row = {"policy": policy, "budget": budget if name != "full" else 1.0, "seed": seed,
                   **evaluate(rep, ctx, eval_vecs, eval_labels, labels, target, seed),
                   "seconds": round(time.perf_counter() - t, 3)}
            rows.append(row)
            tick(1)
    _write_results(out, rows, cfg, policies, budgets, seeds, label_field, target, table_dir,
                   {"setup_seconds": round(setup_seconds, 1), "total_seconds": round(time.perf_counter() - t0, 1),
                    "eval_items": int(len(eval_vecs)), "run_reference_items": len(ctx.run_pairs)})
    return out


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``name`` or ``name[key=value;key=value]`` (config overrides for one line of the comparison)."""
    import yaml

    name, _, rest = spec.partition("[")
    overrides: dict[str, Any] = {}
    if rest:
        if not rest.endswith("]"):
            raise ValueError(f"bad policy spec {spec!r}: expected name[key=value;...]")
        for item in rest[:-1].split(";"):
            if item.strip():
                k, sep, v = item.partition("=")
                if not sep:
                    raise ValueError(f"bad policy spec {spec!r}: {item!r} is not key=value")
                overrides[k.strip()] = yaml.safe_load(v)
    recipe.check_policy(name.strip())
    return name.strip(), overrides


def _labels(corpus, cfg: Config, field_name: str) -> dict[str, Any]:
    """Read a label field straight from the corpus file (selection never sees it)."""
    from ..evaluate import labels_by_id

    p = Path(cfg.corpus)
    if p.suffix not in (".jsonl", ".json") and not p.name.endswith(".jsonl.gz"):
        raise ValueError("--label-field needs a JSONL corpus")
    return labels_by_id(p, field_name, cfg.corpus_options.id_field)


def portable_path(path: str | Path | None) -> str | None:
    """A path as results files name it: relative to the working directory (no machine's absolute path)."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_absolute():
        return str(p)
    try:
        return os.path.relpath(p)
    except ValueError:  # another drive (Windows)
        return p.name


def portable_config(cfg: Config) -> dict[str, Any]:
    """The config with its file and folder paths made :func:`portable_path`."""
    d = cfg.to_dict()
    for key in ("corpus", "reference", "out"):
        d[key] = portable_path(d.get(key))
    ex = d.get("extract", {})
    if ex.get("cache_dir"):
        ex["cache_dir"] = portable_path(ex["cache_dir"])
    d.setdefault("hygiene", {})["decontaminate"] = [portable_path(x) for x in d.get("hygiene", {}).get("decontaminate", [])]
    return d


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent, timeout=10).stdout.strip() or "unknown"
    except Exception:
        return "unknown"


def _write_results(out: Path, rows: list[dict[str, Any]], cfg: Config, policies, budgets, seeds, label_field,
                   target, table_dir, timing) -> None:
    keys = ["policy", "budget", "seed", "calls", "warmup_calls", "pairs", "tokens", "ot", "on_target",
            "on_target_after_warmup", "clusters", "entropy", "distinct3", "seconds"]
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)
    agg = aggregate(rows)
    atomic_write_json(out / "results.json", {"commit": _commit(), "policies": policies, "budgets": budgets,
                                             "seeds": seeds, "label_field": label_field, "target": target,
                                             "table": portable_path(table_dir), "timing": timing,
                                             "config": portable_config(cfg),
                                             "aggregate": agg})
    atomic_write_text(out / "results.md", results_markdown(agg, rows, cfg, policies, budgets, seeds, target,
                                                           timing))
    _plots(out, agg, policies)


def aggregate(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """policy -> budget -> metric -> [mean, sd] over seeds."""
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for r in rows:
        out.setdefault(r["policy"], {}).setdefault(str(r["budget"]), {})
    for pol, by_b in out.items():
        for b in by_b:
            sel = [r for r in rows if r["policy"] == pol and str(r["budget"]) == b]
            for m in METRICS + ("on_target_after_warmup",):
                vals = [r[m] for r in sel if m in r and r[m] is not None and not _isnan(r[m])]
                if vals:
                    by_b[b][m] = [float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0]
    return out


def _isnan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


def results_markdown(agg, rows, cfg: Config, policies, budgets, seeds, target, timing) -> str:
    full_ot = agg.get("full", {}).get("1.0", {}).get("ot", [None])[0]
    lines = [f"# equal compare: {len(policies)} policies x {len(budgets)} budgets x {seeds} seeds",
             "", f"Corpus `{portable_path(cfg.corpus)}`, reference `{portable_path(cfg.reference)}` (split: "
             f"{timing['run_reference_items']} items given to the runs, {timing['eval_items']} held out for "
             f"evaluation), commit `{_commit()}`. Mean ± sd over seeds. OT: exact EMD, cosine cost, base "
             f"embedder, selected pairs vs the held-out reference (lower is better)."
             + (f" On target: share of all extracted documents (warm-up included) labelled `{target}`." if target
                else ""), ""]
    has_target = any("on_target" in r for r in rows)
    for b in budgets:
        lines += [f"## budget {b:g}", "",
                  "| policy | calls | OT ↓ | on target ↑ | pairs | clusters | entropy | distinct 3-grams |",
                  "|---|---|---|---|---|---|---|---|"]
        for pol in policies:
            m = agg.get(pol, {}).get(str(b if pol != "full" else 1.0), {})
            if not m:
                continue

            def f(key, fmt="{:.3f}"):
                v = m.get(key)
                return "—" if v is None else (fmt.format(v[0]) + (f" ± {fmt.format(v[1])}" if v[1] else ""))
            lines.append(f"| {pol} | {f('calls', '{:.0f}')} | {f('ot', '{:.4f}')} | "
                         f"{f('on_target') if has_target else '—'} | {f('pairs', '{:.0f}')} | "
                         f"{f('clusters', '{:.1f}')} | {f('entropy', '{:.2f}')} | {f('distinct3')} |")
        lines.append("")
    if full_ot is not None:
        lines += ["## budget at which each policy first reaches the OT distance of `full`", "",
                  f"`full` (every document, {agg['full']['1.0']['calls'][0]:.0f} calls): OT {full_ot:.4f}.", "",
                  "| policy | first budget with mean OT ≤ full |", "|---|---|"]
        for pol in policies:
            if pol == "full":
                continue
            hit = [b for b in budgets if agg.get(pol, {}).get(str(b), {}).get("ot", [math.inf])[0] <= full_ot]
            lines.append(f"| {pol} | {hit[0]:g} |" if hit else f"| {pol} | not within {max(budgets):g} |")
        lines.append("")
    lines += [f"Replays took {timing['total_seconds']:.0f} s in all ({timing['setup_seconds']:.0f} s of set-up: "
              f"corpus index and embedding, reference split). Per-run rows: `results.csv`; plots: `*.png`.", ""]
    return "\n".join(lines)


def _plots(out: Path, agg, policies) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for metric, label in (("ot", "OT distance to the held-out reference (lower is better)"),
                          ("on_target", "on-target share of extracted documents"), ("pairs", "pairs extracted"),
                          ("clusters", "evaluation clusters covered"), ("distinct3", "distinct question 3-grams")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        drew = False
        for pol in policies:
            pts = sorted((float(b), v[metric]) for b, v in agg.get(pol, {}).items() if metric in v)
            if not pts:
                continue
            drew = True
            if pol == "full":
                ax.axhline(pts[0][1][0], color="grey", ls="--", label="full (every document)")
                continue
            xs = [p[0] for p in pts]
            ax.errorbar(xs, [p[1][0] for p in pts], yerr=[p[1][1] for p in pts], marker="o", capsize=3, label=pol,
                        lw=2.5 if pol == "equal" else 1.2)
        if not drew:
            plt.close(fig)
            continue
        ax.set_xlabel("budget (share of the corpus extracted)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncol=2)
        fig.tight_layout()
        fig.savefig(out / f"{metric}.png", dpi=110)
        plt.close(fig)
