"""The run report: ``report.md`` with PNG plots, and the self-contained ``report.html``
(:mod:`equal.report_html`), written from the files of a run folder.

Shows how the budget was spent (warm-up vs bandit, per round), the reward of
each pull and the mean reward per cluster, and the OT distance of the growing
dataset to the reference after each round.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .io import atomic_write_text, read_json, read_jsonl
from .score import ot_distance

MAX_POINTS = 2000  # OT curve: larger cumulative sets are subsampled (seeded) to keep the report fast


def ot_curve(run_dir: Path, summary: dict[str, Any], rounds: list[dict[str, Any]]) -> tuple[list[int], list[float]]:
    """OT distance of the dataset to the reference after the warm-up (round 0) and after each round."""
    state = run_dir / "state"
    if (state / "reference.npz").exists():  # the reward sample of the reference (reference.npy in older runs)
        with np.load(state / "reference.npz") as z:
            ref = z["reward"]
    elif (state / "reference.npy").exists():
        ref = np.load(state / "reference.npy")
    else:
        return [], []
    dim = ref.shape[1]
    warm = np.fromfile(state / "warmup_vectors.f32", dtype=np.float32).reshape(-1, dim)
    bandit = np.fromfile(state / "bandit_vectors.f32", dtype=np.float32).reshape(-1, dim)
    cfg = summary.get("config", {}).get("score", {})
    metric, method, reg = cfg.get("metric", "cosine"), cfg.get("method", "emd"), cfg.get("sinkhorn_reg", 0.05)
    per_round: dict[int, int] = {}
    for r in rounds:
        per_round[r["round"]] = per_round.get(r["round"], 0) + r["n_pairs"]
    xs, ys = [], []
    rng = np.random.default_rng(0)
    step = max(1, len(per_round) // 100)  # at most ~100 points on the curve
    offsets = np.cumsum([0] + [per_round[k] for k in sorted(per_round)])
    checkpoints = [(0, 0)] + [(k, int(offsets[i + 1])) for i, k in enumerate(sorted(per_round))
                              if i % step == 0 or i == len(per_round) - 1]
    for round_no, n_bandit in checkpoints:
        pts = np.concatenate([warm, bandit[:n_bandit]])
        if len(pts) == 0:
            continue
        if len(pts) > MAX_POINTS:
            pts = pts[rng.choice(len(pts), MAX_POINTS, replace=False)]
        xs.append(round_no)
        ys.append(ot_distance(pts, ref, metric, method, reg))
    return xs, ys


def write_report(run_dir: str | Path) -> Path:
    """Write ``report.md``, ``report/*.png`` and ``report.html`` into the run folder; returns report.md's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    run_dir = Path(run_dir)
    summary = read_json(run_dir / "summary.json", {}) or {}
    rounds = list(read_jsonl(run_dir / "rounds.jsonl"))
    fig_dir = run_dir / "report"
    fig_dir.mkdir(exist_ok=True)
    plan = summary.get("plan", {})
    budget = plan.get("budget_docs", 0)
    warm = plan.get("warmup_docs", 0)

    # 1. budget spent over rounds
    fig, ax = plt.subplots(figsize=(6, 3.2))
    spent = [warm]
    last_round, acc = 0, warm
    xs = [0]
    for r in rounds:
        acc += len(r["doc_ids"])
        if r["round"] != last_round:
            xs.append(r["round"])
            spent.append(acc)
            last_round = r["round"]
        else:
            spent[-1] = acc
    ax.step(xs, spent, where="post", label="documents extracted")
    ax.axhline(budget, color="grey", ls="--", lw=1, label=f"budget ({budget})")
    ax.axhline(warm, color="grey", ls=":", lw=1, label=f"warm-up ({warm})")
    ax.set_xlabel("round")
    ax.set_ylabel("documents")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(fig_dir / "budget.png", dpi=110)
    plt.close(fig)

    # 2. reward per pull over rounds, and mean reward per cluster
    arms = summary.get("arms", {})
    means = arms.get("mean_reward", [])
    pulls = arms.get("pulls", [])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.4))
    if rounds:
        a1.scatter([r["round"] for r in rounds], [r["reward"] for r in rounds], s=8, c=[r["cluster"] for r in rounds],
                   cmap="tab20")
    a1.set_xlabel("round")
    a1.xaxis.set_major_locator(MaxNLocator(integer=True))
    a2.xaxis.set_major_locator(MaxNLocator(integer=True))
    a1.set_ylabel("reward (1 - OT)")
    a1.set_title("reward of each pull", fontsize=9)
    order = [j for j in np.argsort([-(m if m is not None else -1) for m in means]) if means[j] is not None]
    a2.bar(range(len(order)), [means[j] for j in order], color="tab:blue")
    a2.set_xlabel("clusters, best first")
    a2.set_ylabel("mean reward")
    a2.set_title("mean reward per cluster (warm-up + pulls)", fontsize=9)
    fig.tight_layout()
    fig.savefig(fig_dir / "rewards.png", dpi=110)
    plt.close(fig)

    # 3. OT distance of the dataset to the reference over rounds
    cx, cy = ot_curve(run_dir, summary, rounds)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(cx, cy, marker=".")
    ax.set_xlabel("round (0 = after warm-up)")
    ax.set_ylabel("OT distance to reference")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(fig_dir / "ot.png", dpi=110)
    plt.close(fig)

    from .inspection import open_corpus
    from .report_baseline import selection_baseline
    from .report_html import bandit_pulls, ot_caption

    top = [j for j in order[:10]]
    bandit = bandit_pulls(rounds, len(pulls))
    never = [j for j, m in enumerate(means) if m is None]
    baseline = selection_baseline(run_dir, summary, open_corpus(run_dir, summary.get("config") or {}))
    lead = baseline.line() if hasattr(baseline, "line") else f"Selection vs random: not computed ({baseline})."
    lines = [
        f"# equal run report: `{run_dir.name}`",
        "", lead, "",
        "| | |", "|---|---|",
        f"| documents in corpus | {summary.get('docs_total')} |",
        f"| extraction budget | {budget} documents ({warm} warm-up) |",
        f"| documents extracted | {summary.get('docs_extracted')} ({summary.get('docs_warmup')} warm-up, "
        f"{summary.get('docs_bandit')} bandit) |",
        f"| QA pairs kept | {summary.get('pairs')} |",
        f"| clusters (k) / per round / docs per pull | {plan.get('k')} / {plan.get('clusters_per_round')} / "
        f"{plan.get('docs_per_pull')} |",
        f"| bandit rounds | {summary.get('rounds')} |",
        f"| final OT distance to reference | {summary.get('final_ot'):.4f} |" if summary.get("final_ot") is not None
        else "| final OT distance to reference | n/a |",
        f"| OT after warm-up → end | {cy[0]:.4f} → {cy[-1]:.4f} |" if cy else "| OT over rounds | n/a |",
        "",
        "## Budget", "", "![budget](report/budget.png)", "",
        "## Rewards", "", "![rewards](report/rewards.png)", "",
        "Best clusters by mean reward:", "",
        "| cluster | mean reward | warm-up pulls | bandit pulls | documents |", "|---:|---:|---:|---:|---:|",
        *[f"| {j} | {means[j]:.4f} | {pulls[j] - bandit[j]} | {bandit[j]} | {arms.get('sizes', [0] * (j + 1))[j]} |"
          for j in top],
        "",
        f"{len(never)} of {len(means)} clusters were never pulled." if never else "Every cluster was pulled.",
        "",
        "## OT distance over rounds", "", "![ot](report/ot.png)", "", ot_caption(cy), "",
        "## Time per stage (seconds)", "",
        "| stage | seconds |", "|---|---:|",
        *[f"| {k} | {v:.1f} |" for k, v in summary.get("stage_seconds", {}).items()],
        "",
        "## Skipped", "",
        *([f"- {k}: {v}" for k, v in summary.get("skipped", {}).items()] or ["- nothing"]),
        "",
    ]
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(lines))
    from .report_html import write_html

    write_html(run_dir, summary, rounds, (cx, cy), baseline)
    return path
