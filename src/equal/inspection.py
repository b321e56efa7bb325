"""``equal inspect``: what each cluster of a run is: size, pulls, mean reward, distinctive terms, samples.

Distinctive terms are c-TF-IDF (as in BERTopic): the documents of each cluster (a seeded sample of at most
``docs_per_cluster``) are pooled into one bag of words; a term's weight in cluster c is its frequency in c
times ``log(1 + A / f_t)``, with A the mean number of words per cluster and f_t the term's count over all
clusters. Words are scikit-learn's default tokens, English stop words left out. Only the text field of a
document is read (no label field of the corpus).

Documents and pairs are untrusted text: everything printed goes through :func:`printable`, which removes
terminal escape sequences (ANSI colours, window-title and hyperlink OSC sequences) and control characters.
"""

from __future__ import annotations

from .errors import UserError

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .io import read_json, read_jsonl

TITLE_CHARS = 90

# ESC-introduced sequences (CSI "ESC [ ... final", OSC "ESC ] ... BEL|ST", DCS/SOS/PM/APC "... ST", two-byte
# escapes) and the 8-bit CSI; then every control character but newline and tab, and the bidirectional
# overrides and isolates that make a terminal show text in an order other than its own
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"
                      r"|\x1b[ -~]?|\x9b[0-?]*[ -/]*[@-~]")
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` without terminal escape sequences and control characters (newlines and tabs kept)."""
    return _CONTROLS.sub("", _ESCAPES.sub("", text))


class InspectError(UserError, ValueError):
    """A user error (no finished run, unknown cluster): one line, exit code 2."""


@dataclass
class ClusterProfile:
    cluster: int
    size: int
    pulls: int
    mean_reward: float | None
    pairs: int
    terms: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    samples: list[dict[str, str]] = field(default_factory=list)  # question/answer of a few pairs


def title_of(text: str) -> str:
    """A document's first non-empty line, markup trimmed, cut to ``TITLE_CHARS``."""
    for line in text.splitlines():
        line = line.strip().strip("#=*-_`>|:").strip()
        if len(line) >= 3:
            return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rstrip() + "…"
    return text.strip()[:TITLE_CHARS]


def open_corpus(run_dir: Path, cfg: dict[str, Any]) -> Any:
    """The run's corpus through its saved index, or None when it cannot be found. A relative corpus path is
    tried from the current folder, then beside the run folder."""
    from .config import CorpusConfig, _from_dict
    from .corpus import Corpus, CorpusError

    raw = Path(str(cfg.get("corpus") or ""))
    candidates = [raw] if raw.is_absolute() else [raw, run_dir.parent / raw, run_dir / raw]
    path = next((p for p in candidates if str(raw) and p.exists()), None)
    if path is None:
        return None
    import shutil
    import tempfile

    try:
        options = _from_dict(CorpusConfig, cfg.get("corpus_options") or {}, "corpus_options.")
        # the run's saved index is read from a copy: a rebuilt one (the corpus file changed) never lands in state/
        with tempfile.TemporaryDirectory(prefix="equal-inspect-") as tmp:
            for name in ("corpus_index.json", "corpus_positions.npy"):
                if (run_dir / "state" / name).is_file():
                    shutil.copyfile(run_dir / "state" / name, Path(tmp) / name)
            return Corpus(path, options, index_dir=Path(tmp))
    except (CorpusError, ValueError, OSError):
        return None


def c_tf_idf(texts_by_cluster: dict[int, list[str]], top: int) -> dict[int, list[str]]:
    """The ``top`` most distinctive terms of each cluster (c-TF-IDF over the pooled texts of each cluster)."""
    from sklearn.feature_extraction.text import CountVectorizer

    clusters = [c for c, t in texts_by_cluster.items() if t]
    if not clusters:
        return {}
    import re

    # LaTeX macros and environments, HTML/XML tags and entities, URLs and Markdown link targets are markup, not
    # terms: they go before counting (so "frac", "sqrt", "begin", "nbsp", "href", "https" never win a cluster)
    markup = re.compile(r"\\(?:begin|end)\{[^}]*\}|\\[A-Za-z]+\*?|</?[A-Za-z][^>]*>|&[A-Za-z]+;|&#\d+;"
                        r"|(?:https?://|www\.)\S+|\]\([^)]*\)|\b(?:amp|nbsp|quot|href|http|https)\b")
    docs = [markup.sub(" ", " ".join(texts_by_cluster[c])) for c in clusters]
    vec = CountVectorizer(stop_words="english", token_pattern=r"(?u)\b[^\W\d_][^\W\d_]+\b", lowercase=True)
    try:
        counts = vec.fit_transform(docs).astype(np.float64)  # (clusters, terms), sparse
    except ValueError:  # nothing but stop words
        return {c: [] for c in clusters}
    words_per_cluster = np.asarray(counts.sum(axis=1)).ravel()
    tf = counts.multiply(1.0 / np.maximum(words_per_cluster, 1)[:, None]).tocsr()
    f_t = np.asarray(counts.sum(axis=0)).ravel()
    idf = np.log(1.0 + words_per_cluster.mean() / np.maximum(f_t, 1))
    weights = tf.multiply(idf[None, :]).tocsr()
    vocab = vec.get_feature_names_out()
    out = {}
    for row, c in enumerate(clusters):
        w = weights.getrow(row).toarray().ravel()
        best = np.argsort(-w, kind="stable")[:top]
        out[c] = [str(vocab[j]) for j in best if w[j] > 0]
    return out


def cluster_profiles(run_dir: str | Path, clusters: list[int] | None = None, top_terms: int = 10,
                     n_titles: int = 3, n_pairs: int = 2, docs_per_cluster: int = 200,
                     seed: int = 0) -> tuple[list[ClusterProfile], bool]:
    """Profiles of ``clusters`` (default: all), best mean reward first, and whether the corpus could be read
    (without it there are no terms or titles)."""
    run_dir = Path(run_dir)
    summary = read_json(run_dir / "summary.json")
    if not summary or not (run_dir / "state" / "clusters.npz").exists():
        raise InspectError(f"{run_dir} holds no finished run (no summary.json or state/clusters.npz)")
    cfg_path = run_dir / "config.yaml"
    cfg = (yaml.safe_load(cfg_path.read_text(encoding="utf-8")) if cfg_path.exists() else None) or summary.get("config", {})
    labels = np.load(run_dir / "state" / "clusters.npz")["labels"]
    k = int(labels.max()) + 1 if len(labels) else 0
    arms = summary.get("arms", {})
    pulls = list(arms.get("pulls", [])) + [0] * k
    means = list(arms.get("mean_reward", [])) + [None] * k
    sizes = np.bincount(labels, minlength=k)
    wanted = list(range(k)) if clusters is None else clusters
    for c in wanted:
        if not 0 <= c < k:
            raise InspectError(f"cluster {c} does not exist (the run has clusters 0 to {k - 1})")
    pairs_by: dict[int, list[dict[str, Any]]] = {}
    for p in read_jsonl(run_dir / "dataset.jsonl"):
        pairs_by.setdefault(int(p.get("cluster", -1)), []).append(p)
    profiles = [ClusterProfile(c, int(sizes[c]), int(pulls[c]), means[c], len(pairs_by.get(c, [])),
                               samples=[{"question": p["question"], "answer": p["answer"]}
                                        for p in pairs_by.get(c, [])[:n_pairs]]) for c in wanted]
    corpus = open_corpus(run_dir, cfg)
    if corpus is not None and len(corpus) == len(labels):
        rng = np.random.default_rng([seed, 0x15])
        # terms need every cluster's words (the idf); titles only the wanted ones
        rows_by = {c: np.flatnonzero(labels == c) for c in range(k)}
        sample = {c: np.sort(rng.choice(r, min(len(r), docs_per_cluster), replace=False)) for c, r in rows_by.items()}
        order = np.concatenate([sample[c] for c in range(k)]) if k else np.array([], dtype=np.int64)
        texts = {}
        for s in range(0, len(order), 1024):
            chunk = np.sort(order[s: s + 1024])
            for i, doc in zip(chunk.tolist(), corpus.get(chunk)):
                texts[i] = printable(doc.text)  # an escape sequence's payload (a window title) is no term either
        terms = c_tf_idf({c: [texts[i] for i in sample[c].tolist()] for c in range(k)}, top_terms)
        for prof in profiles:
            prof.terms = terms.get(prof.cluster, [])
            prof.titles = [title_of(texts[i]) for i in sample[prof.cluster][:n_titles].tolist()]
    profiles.sort(key=lambda p: (p.mean_reward is None, -(p.mean_reward or 0.0), -p.pulls, p.cluster))
    return profiles, corpus is not None


def _short(text: str, n: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def inspect_run(run_dir: str | Path, cluster: int | None = None, top_terms: int = 10) -> str:
    """The text ``equal inspect`` prints."""
    one = cluster is not None
    profiles, has_corpus = cluster_profiles(run_dir, [cluster] if one else None, top_terms,
                                            n_titles=8 if one else 3, n_pairs=5 if one else 1)
    summary = read_json(Path(run_dir) / "summary.json")
    lines = [f"run {run_dir}: {len(np.load(Path(run_dir) / 'state' / 'clusters.npz')['centroids'])} clusters, "
             f"{summary.get('docs_extracted')} of {summary.get('docs_total')} documents extracted, "
             f"{summary.get('pairs')} pairs; clusters by mean reward, best first"]
    if not has_corpus:
        lines.append("(the corpus of this run was not found: no terms or sample documents)")
    for p in profiles:
        mean = "n/a (never pulled)" if p.mean_reward is None else f"{p.mean_reward:.4f}"
        lines += ["", f"cluster {p.cluster}: {p.size} documents, {p.pulls} pulls, mean reward {mean}, {p.pairs} pairs"]
        if p.terms:
            lines.append(f"  terms: {', '.join(p.terms)}")
        for t in p.titles:
            lines.append(f"  doc:   {t}")
        for s in p.samples:
            lines.append(f"  pair:  Q: {_short(s['question'])}")
            lines.append(f"         A: {_short(s['answer'])}")
    return printable("\n".join(lines)) + "\n"

