"""``report.html``: one self-contained page (every image embedded as a base64 PNG) that shows where a run's
budget went: reward per cluster over rounds, pulls per cluster, documents extracted against the budget, the OT
distance over rounds, a 2-D map of the clusters, the best clusters with sample documents and pairs, hygiene,
cost and timing. Written from the run folder's files, by the run at its end and by ``equal report``.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .io import atomic_write_text

log = logging.getLogger(__name__)

MAX_HEAT_COLS = 60  # rounds beyond this are averaged into bins
MAX_HEAT_ROWS = 40  # the most pulled clusters
TOP_CLUSTERS = 10
SAMPLE_CHARS = 600  # a sample question or answer is cut here
QUALITY_ROWS = ("heading_question", "heading_answer", "link_answer", "short")

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1100px;color:#222;
padding:0 16px}
h1{font-size:1.5em;margin-bottom:4px} h2{font-size:1.15em;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0;font-size:.9em} td,th{border:1px solid #ddd;padding:4px 8px;
vertical-align:top;text-align:left;max-width:360px} th{background:#f4f4f4} td.n{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:12px}
figure{margin:0} figcaption{font-size:.85em;color:#555} img{max-width:100%;height:auto;border:1px solid #eee}
.q,.a{font-size:.8em;color:#555;margin-top:4px} .terms{color:#2a5d9f;font-size:.9em} small{color:#777}
pre.src{white-space:pre-wrap;word-break:break-word;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
font-size:.8em;background:#f7f7f7;border:1px solid #eee;margin:2px 0;padding:4px;max-height:12em;overflow:auto}
td.pairs{min-width:340px} p.lead{font-size:1.05em;background:#eef4fb;border-left:4px solid #2a5d9f;padding:8px 12px} p.never{color:#555}
"""


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _img(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def reward_heatmap(rounds: Sequence[dict[str, Any]]) -> bytes:
    """Reward of each pull, clusters (the most pulled) × rounds (binned past ``MAX_HEAT_COLS``)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if not rounds:
        ax.text(0.5, 0.5, "no bandit rounds", ha="center", va="center")
        ax.set_axis_off()
        return _png(fig)
    n_rounds = max(r["round"] for r in rounds)
    pulls: dict[int, int] = {}
    for r in rounds:
        pulls[r["cluster"]] = pulls.get(r["cluster"], 0) + 1
    rows = sorted(sorted(pulls, key=lambda c: -pulls[c])[:MAX_HEAT_ROWS])
    row_of = {c: i for i, c in enumerate(rows)}
    width = max(1, int(np.ceil(n_rounds / MAX_HEAT_COLS)))
    cols = int(np.ceil(n_rounds / width))
    total = np.zeros((len(rows), cols))
    count = np.zeros((len(rows), cols))
    for r in rounds:
        if r["cluster"] in row_of:
            total[row_of[r["cluster"]], (r["round"] - 1) // width] += r["reward"]
            count[row_of[r["cluster"]], (r["round"] - 1) // width] += 1
    grid = np.ma.masked_where(count == 0, total / np.maximum(count, 1))
    im = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest",
                   extent=(0.5, cols * width + 0.5, len(rows) - 0.5, -0.5))
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([str(c) for c in rows], fontsize=7 if len(rows) > 20 else 9)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round" + (f" ({width} rounds per column)" if width > 1 else ""))
    ax.set_ylabel("cluster")
    fig.colorbar(im, ax=ax, label="reward (1 - OT)")
    fig.tight_layout()
    return _png(fig)


def bandit_pulls(rounds: Sequence[dict[str, Any]], k: int) -> list[int]:
    """Pulls per cluster in ``rounds.jsonl`` (the bandit's); the rest of ``arms.pulls`` are warm-up pseudo-pulls."""
    out = [0] * k
    for r in rounds:
        if 0 <= r["cluster"] < k:
            out[r["cluster"]] += 1
    return out


def pulls_per_cluster(pulls: Sequence[int], means: Sequence[float | None], sizes: Sequence[int],
                      bandit: Sequence[int] | None = None) -> bytes:
    """Pulls per cluster (bandit pulls coloured by mean reward, warm-up pseudo-pulls hatched below them) above
    each cluster's size."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(7, 4), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    k = len(pulls)
    bandit = list(bandit) if bandit is not None else list(pulls)
    warm = [max(0, p - b) for p, b in zip(pulls, bandit)]
    finite = [m for m in means if m is not None]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    cmap = plt.get_cmap("viridis")
    colours = ["#cccccc" if m is None else cmap((m - lo) / (hi - lo) if hi > lo else 0.5) for m in means]
    if any(warm):
        ax.bar(range(k), warm, color="white", edgecolor="#777777", hatch="///", width=0.85, label="warm-up")
    ax.bar(range(k), bandit, bottom=warm, color=colours, width=0.85, label="bandit")
    if any(warm):
        ax.legend(fontsize=7, loc="upper right")
    ax.set_ylabel("pulls")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.yaxis.set_major_locator(MaxNLocator(nbins=3, integer=True))
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.bar(range(len(sizes)), sizes, color="#999999", width=0.85)
    ax2.set_ylabel("documents")
    ax2.set_xlabel("cluster")
    if finite:
        sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(lo, hi))
        fig.colorbar(sm, ax=[ax, ax2], label="mean reward (grey: never pulled)")
    return _png(fig)


def cluster_map(centroids: np.ndarray, sizes: Sequence[int], means: Sequence[float | None],
                label: Sequence[int]) -> bytes:
    """The clusters on the first two principal components of their centroids: size = documents, colour = mean
    reward (grey: never pulled); every cluster is numbered, those in ``label`` in bold."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.6))
    c = np.asarray(centroids, dtype=np.float64)
    if len(c) >= 2:
        c = c - c.mean(axis=0)
        _, _, vt = np.linalg.svd(c, full_matrices=False)
        xy = c @ vt[:2].T
    else:
        xy = np.zeros((len(c), 2))
    sz = np.asarray(sizes, dtype=np.float64)
    area = 20 + 380 * sz / max(sz.max(), 1) if len(sz) else 20
    pulled = np.array([m is not None for m in means], dtype=bool)
    if (~pulled).any():
        ax.scatter(xy[~pulled, 0], xy[~pulled, 1], s=np.asarray(area)[~pulled] if len(sz) else 20, c="#cccccc",
                   edgecolors="#999999", linewidths=0.5, label="never pulled")
    if pulled.any():
        sc = ax.scatter(xy[pulled, 0], xy[pulled, 1], s=np.asarray(area)[pulled] if len(sz) else 20,
                        c=[m for m in means if m is not None], cmap="viridis", edgecolors="k", linewidths=0.5)
        fig.colorbar(sc, ax=ax, label="mean reward")
    import matplotlib.patheffects as pe

    halo = [pe.withStroke(linewidth=2.5, foreground="white")]
    for j in range(len(xy)):  # every bubble numbered, dark text on a white halo: readable on any colour
        ax.annotate(str(j), xy[j], fontsize=8 if j in set(label) else 6.5, ha="center", va="center",
                    fontweight="bold" if j in set(label) else "normal", color="black", path_effects=halo)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    if (~pulled).any():
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _table(rows: Sequence[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _fmt(x: Any, nd: int = 4) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def _short(text: str, n: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _src(text: str) -> str:
    """A sample as source: LaTeX and Markdown as written (a <pre> block), never rendered or re-flowed."""
    text = str(text)
    text = text if len(text) <= SAMPLE_CHARS else text[: SAMPLE_CHARS - 1] + "…"
    return f'<pre class="src">{html.escape(text)}</pre>'


def _top_clusters(run_dir: Path, rounds: Sequence[dict[str, Any]]) -> str:
    from .inspection import cluster_profiles

    try:
        profiles, has_corpus = cluster_profiles(run_dir, top_terms=8, n_titles=3, n_pairs=2, docs_per_cluster=50)
    except Exception as e:  # the page must not fail for want of the corpus or a cluster file
        log.warning("report.html: no cluster table: %s", e)
        return "<p>No cluster table (no clusters file in this run folder).</p>"
    k = max([p.cluster for p in profiles], default=-1) + 1
    bandit = bandit_pulls(rounds, k)
    samples = _good_samples(run_dir, 2)
    pulled = [p for p in profiles if p.mean_reward is not None]
    never = [p for p in profiles if p.mean_reward is None]
    rows = []
    for p in pulled[:TOP_CLUSTERS]:
        titles = "<br>".join(html.escape(t) for t in p.titles) or "<small>n/a</small>"
        pairs = "".join(f'<div class="q">Q:</div>{_src(s["question"])}<div class="a">A:</div>{_src(s["answer"])}'
                        for s in samples.get(p.cluster, []))
        rows.append(f'<tr><td class="n">{p.cluster}</td><td class="n">{p.size}</td>'
                    f'<td class="n">{p.pulls - bandit[p.cluster]}</td><td class="n">{bandit[p.cluster]}</td>'
                    f'<td class="n">{_fmt(p.mean_reward)}</td><td class="n">{p.pairs}</td>'
                    f'<td><span class="terms">{html.escape(", ".join(p.terms))}</span></td>'
                    f"<td>{titles}</td><td class=\"pairs\">{pairs or '<small>no pairs</small>'}</td></tr>")
    note = "" if has_corpus else "<p><small>The run's corpus was not found: no terms or titles.</small></p>"
    never_line = (f'<p class="never">{len(never)} of {len(profiles)} clusters were never pulled '
                  f"({sum(p.size for p in never)} documents, none of them read).</p>" if never else
                  f'<p class="never">Every one of the {len(profiles)} clusters was pulled.</p>')
    return (note + never_line + "<table><tr><th>cluster</th><th>documents</th><th>warm-up pulls</th>"
            "<th>bandit pulls</th><th>mean reward</th><th>pairs</th><th>distinctive terms (c-TF-IDF)</th>"
            "<th>sample documents</th><th>sample pairs that pass the quality rules (as written: LaTeX and "
            "Markdown shown as source)</th></tr>"
            + "".join(rows) + "</table>")


def _good_samples(run_dir: Path, n: int) -> dict[int, list[dict[str, Any]]]:
    """The first ``n`` pairs of each cluster that pass the run's hygiene quality rules (what an export holds)."""
    from .export import run_config
    from .hygiene import quality_reason
    from .io import read_jsonl

    _, hcfg, _ = run_config(run_dir)
    out: dict[int, list[dict[str, Any]]] = {}
    for p in read_jsonl(run_dir / "dataset.jsonl"):
        got = out.setdefault(int(p.get("cluster", -1)), [])
        if len(got) < n and (not hcfg.enabled or quality_reason(str(p.get("question", "")), str(p.get("answer", "")),
                                                                hcfg) is None):
            got.append(p)
    return out


def ot_caption(cy: Sequence[float]) -> str:
    """The OT curve's caption: what the curve is and why it moves the way it does."""
    base = "OT distance of the whole dataset to the reference after the warm-up (round 0) and after each round; " \
           "lower is closer."
    if len(cy) >= 2 and cy[-1] > cy[0]:
        return (base + f" It rises ({cy[0]:.3f} → {cy[-1]:.3f}) because the best documents are taken first: the "
                "warm-up takes the documents nearest the reference and, inside each cluster, documents are taken "
                "nearest first, so every round adds pairs a little farther from the reference than those before. "
                "A rising curve is the budget being spent, not selection getting worse: the line at the top "
                "compares the run with a random sample of as many documents.")
    if len(cy) >= 2:
        return base + f" It falls ({cy[0]:.3f} → {cy[-1]:.3f}): the rounds added pairs closer to the reference."
    return base


def write_html(run_dir: Path, summary: dict[str, Any], rounds: list[dict[str, Any]],
               ot: tuple[list[int], list[float]], baseline: Any = None) -> Path:
    """Write ``report.html`` (atomically); ``report/budget.png`` and ``report/ot.png`` must exist. ``baseline``:
    an :class:`equal.report_baseline.Baseline` or a sentence saying why there is none."""
    from .naming import file_label

    run_dir = Path(run_dir)
    plan = summary.get("plan", {})
    arms = summary.get("arms", {})
    pulls, means, sizes = arms.get("pulls", []), arms.get("mean_reward", []), arms.get("sizes", [])
    clusters = run_dir / "state" / "clusters.npz"
    ranked = [j for j in np.argsort([-(m if m is not None else -1) for m in means], kind="stable")
              if means[j] is not None][:TOP_CLUSTERS]
    bandit = bandit_pulls(rounds, len(pulls))
    figs = [
        _img(reward_heatmap(rounds), "reward heat map", "Reward (1 − OT distance to the reference) of each pull, per "
             "cluster and round; blank: not pulled."),
        _img(pulls_per_cluster(pulls, means, sizes, bandit), "pulls per cluster",
             f"Pulls per cluster (above): bandit pulls ({sum(bandit)}, as in rounds.jsonl) coloured by mean reward, "
             f"on top of the warm-up's pseudo-pulls ({sum(pulls) - sum(bandit)}, hatched); documents per cluster "
             "(below)."),
        _img((run_dir / "report" / "budget.png").read_bytes(), "documents vs budget",
             "Cumulative documents extracted against the budget."),
        _img((run_dir / "report" / "ot.png").read_bytes(), "OT over rounds", ot_caption(ot[1])),
    ]
    if clusters.exists():
        cent = np.load(clusters)["centroids"]
        if len(cent) == len(sizes):
            figs.append(_img(cluster_map(cent, sizes, means, ranked), "cluster map",
                             "Clusters on the first two principal components of their centroids; point size: "
                             "documents, colour: mean reward (grey: never pulled); every cluster is numbered, the "
                             "best ones in bold."))
    ex = summary.get("extractor", {}) or {}
    hyg = summary.get("hygiene", {}) or {}
    cy = ot[1]
    cfg = summary.get("config") or {}
    overview = _table([
        ("documents in corpus", summary.get("docs_total")),
        ("budget", f"{plan.get('budget_docs')} documents ({plan.get('warmup_docs')} warm-up)"),
        ("documents extracted", f"{summary.get('docs_extracted')} ({summary.get('docs_warmup')} warm-up, "
                                f"{summary.get('docs_bandit')} bandit)"),
        ("QA pairs extracted", summary.get("pairs")),
        ("policy", summary.get("policy")),
        ("clusters (k) / per round / docs per pull",
         f"{plan.get('k')} / {plan.get('clusters_per_round')} / {plan.get('docs_per_pull')}"),
        ("bandit rounds", summary.get("rounds")),
        ("final OT distance to reference", _fmt(summary.get("final_ot"))),
        ("OT after warm-up → end", f"{cy[0]:.4f} → {cy[-1]:.4f}" if cy else "n/a"),
    ])
    cost_rows = [("extractor", ex.get("name")), ("extraction calls", summary.get("extraction_calls"))] + [
        (k.replace("_", " "), _fmt(ex[k])) for k in ("calls", "prompt_tokens", "completion_tokens", "cache_hits",
                                                     "retries", "failures", "wall_seconds", "estimated_cost")
        if k in ex]
    seconds = summary.get("stage_seconds", {}) or {}
    cost_rows.append(("total stage time (s)", f"{sum(seconds.values()):.1f}"))
    hyg_rows = ([("pairs extracted (dataset.jsonl, all kept there)", hyg.get("pairs")),
                 ("pass hygiene (what exports hold)", hyg.get("kept")),
                 ("contaminated", hyg.get("contaminated")),
                 *[(f"quality: {r.replace('_', ' ')}", hyg.get(r, "n/a")) for r in QUALITY_ROWS],
                 ("exact duplicates", hyg.get("exact_duplicate")), ("near duplicates", hyg.get("near_duplicate")),
                 ("drop report", hyg.get("report"))]
                if "kept" in hyg else [("hygiene", hyg.get("error", "not recorded: the run predates hygiene "
                                                             "(equal export applies it)"))])
    lead = (baseline.line() if hasattr(baseline, "line") else
            f"Selection vs random: not computed ({baseline})." if baseline else "")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>equal run report: {html.escape(run_dir.name)}</title>
<style>{_CSS}</style></head><body>
<h1>equal run report: <code>{html.escape(run_dir.name)}</code></h1>
<p class="lead">{html.escape(lead)}</p>
<small>equal {html.escape(str(summary.get('equal_version', '')))} · corpus
<code>{html.escape(file_label(cfg.get('corpus'), run_dir))}</code> · reference
<code>{html.escape(file_label(cfg.get('reference'), run_dir))}</code></small>
<h2>Overview</h2>{overview}
<h2>Where the budget went</h2><div class="grid">{''.join(figs)}</div>
<h2>Best clusters by mean reward</h2>{_top_clusters(run_dir, rounds)}
<h2>Hygiene</h2>{_table(hyg_rows)}
<h2>Cost and time</h2><div class="grid"><div>{_table(cost_rows)}</div>
<div>{_table([(f"{k} (s)", f"{v:.1f}") for k, v in seconds.items()])}<small>Seconds per stage, summed over
resumes.</small></div></div>
</body></html>
"""
    path = run_dir / "report.html"
    atomic_write_text(path, page)
    return path
