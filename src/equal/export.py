"""``equal export``: a run's pairs, after hygiene, in the format a trainer reads, with a dataset card.

Formats (each row keeps its provenance as extra columns: ``doc_id``, ``cluster``, ``round``, ``extractor``,
``rule``):

* ``prompt-completion``: TRL's conversational prompt/completion JSONL, ``{"prompt": [{"role": "user", ...}],
  "completion": [{"role": "assistant", ...}]}``: TRL's ``SFTTrainer`` puts the loss on the completion (the
  answer) only; ``equal train`` trains on these rows;
* ``messages``: OpenAI / TRL conversational JSONL, ``{"messages": [{"role": "user", ...}, {"role": "assistant",
  ...}]}`` (TRL's loss covers the whole conversation unless the chat template marks the assistant turns);
* ``alpaca``: ``instruction``, ``input`` (empty), ``output``;
* ``sharegpt``: ``{"conversations": [{"from": "human", ...}, {"from": "gpt", ...}]}``;
* ``parquet``: ``question``, ``answer`` columns;
* ``hf``: a Hugging Face ``DatasetDict`` written with ``save_to_disk`` (``question``, ``answer``).

The output folder holds ``train`` and, with a validation fraction, ``validation`` (``.jsonl`` or ``.parquet``;
for ``hf`` the ``save_to_disk`` layout, one shard per split), ``README.md``, the dataset card, and the trainers'
dataset configs (:mod:`equal.trainer_configs`: LLaMA-Factory's ``dataset_info.json``, an ``axolotl.yaml``
block). The split is by document (no document has pairs on both sides), seeded. The drop report of the hygiene
goes into the run folder as ``export_dropped.jsonl``. No local absolute path is written: files are named by
their name and content hash.
"""

from __future__ import annotations

from .errors import UserError

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import yaml

from .config import DROP_RULES, ConfigError, ExportConfig, HygieneConfig, _from_dict
from .hygiene import run_hygiene, words
from .naming import file_label
from .io import read_json
from .trainer_configs import AXOLOTL_FILE, LLAMAFACTORY_FILE, card_section, write_trainer_configs

FORMATS = ("prompt-completion", "messages", "alpaca", "sharegpt", "parquet", "hf")
PROVENANCE = ("doc_id", "cluster", "round", "extractor", "rule")
REPORT_NAME = "export_dropped.jsonl"
# what an export folder may hold: a folder holding anything else is not overwritten
_EXPORT_NAMES = {"README.md", "train.jsonl", "validation.jsonl", "train.parquet", "validation.parquet",
                 "dataset_dict.json", "train", "validation", LLAMAFACTORY_FILE, AXOLOTL_FILE}


class ExportError(UserError, ValueError):
    """A user error (missing run, bad format, occupied output folder): one line, exit code 2."""


@dataclass
class ExportResult:
    out: Path
    format: str
    splits: dict[str, int]
    hygiene: dict[str, Any]
    report: Path


def _provenance(p: dict[str, Any]) -> dict[str, Any]:
    return {k: p.get(k) for k in PROVENANCE}


ROW: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "prompt-completion": lambda p: {"prompt": [{"role": "user", "content": p["question"]}],
                                    "completion": [{"role": "assistant", "content": p["answer"]}], **_provenance(p)},
    "messages": lambda p: {"messages": [{"role": "user", "content": p["question"]},
                                        {"role": "assistant", "content": p["answer"]}], **_provenance(p)},
    "alpaca": lambda p: {"instruction": p["question"], "input": "", "output": p["answer"], **_provenance(p)},
    "sharegpt": lambda p: {"conversations": [{"from": "human", "value": p["question"]},
                                             {"from": "gpt", "value": p["answer"]}], **_provenance(p)},
    "parquet": lambda p: {"question": p["question"], "answer": p["answer"], **_provenance(p)},
    "hf": lambda p: {"question": p["question"], "answer": p["answer"], **_provenance(p)},
}


def _arrow_schema() -> Any:
    import pyarrow as pa

    return pa.schema([("question", pa.string()), ("answer", pa.string()), ("doc_id", pa.string()),
                      ("cluster", pa.int64()), ("round", pa.int64()), ("extractor", pa.string()),
                      ("rule", pa.string())])


def run_config(run_dir: Path) -> tuple[dict[str, Any], HygieneConfig, ExportConfig]:
    """The run's config as written (a plain dict) and its hygiene and export sections (defaults where the
    run predates them)."""
    path = run_dir / "config.yaml"
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None
    raw = raw if isinstance(raw, dict) else (read_json(run_dir / "summary.json", {}) or {}).get("config", {})
    try:
        hygiene = _from_dict(HygieneConfig, raw.get("hygiene") or {}, "hygiene.")
        export = _from_dict(ExportConfig, raw.get("export") or {}, "export.")
    except ConfigError as e:
        raise ExportError(f"{path}: {e}") from None
    return raw, hygiene, export


def split_by_document(pairs: list[dict[str, Any]], fraction: float, seed: int) -> dict[str, list[dict[str, Any]]]:
    """``train`` and (fraction > 0) ``validation``: a seeded sample of documents whose pairs all go to
    validation; pairs keep their order."""
    if fraction <= 0:
        return {"train": pairs}
    docs = list(dict.fromkeys(str(p.get("doc_id")) for p in pairs))
    n_val = min(len(docs) - 1, max(1, round(fraction * len(docs)))) if len(docs) > 1 else 0
    rng = np.random.default_rng([seed, 0xE4])
    val_docs = {docs[i] for i in rng.choice(len(docs), n_val, replace=False)} if n_val else set()
    return {"train": [p for p in pairs if str(p.get("doc_id")) not in val_docs],
            "validation": [p for p in pairs if str(p.get("doc_id")) in val_docs]}


def _check_out(out: Path, run_dir: Path) -> None:
    run_files = [run_dir.resolve() / n for n in ("", "state", "report", "model")]
    if out.resolve() in run_files:
        raise ExportError(f"--out {out} would write into the run folder's own files; choose another folder")
    if out.exists():
        if not out.is_dir():
            raise ExportError(f"--out {out} exists and is not a folder")
        other = sorted(p.name for p in out.iterdir() if p.name not in _EXPORT_NAMES)
        if other:
            raise ExportError(f"--out {out} holds files that are not an export ({', '.join(other[:3])}); "
                              f"choose an empty or new folder")


def _write_split(tmp: Path, fmt: str, split: str, rows: list[dict[str, Any]]) -> None:
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows, schema=_arrow_schema()), tmp / f"{split}.parquet")
        return
    with open(tmp / f"{split}.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def export(run_dir: str | Path, fmt: str, out: str | Path, validation: float | None = None, seed: int = 0,
           decontaminate: Iterable[str | Path] = (), hygiene: bool = True, license: str | None = None) -> ExportResult:
    """Export the pairs of ``run_dir`` that pass the run's hygiene (plus ``decontaminate``) to ``out``."""
    run_dir, out = Path(run_dir), Path(out)
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if not (run_dir / "dataset.jsonl").is_file() or not (run_dir / "summary.json").is_file():
        raise ExportError(f"{run_dir} holds no finished run (no dataset.jsonl and summary.json)")
    raw, hcfg, ecfg = run_config(run_dir)
    if not hygiene:
        hcfg = HygieneConfig(**{**hcfg.__dict__, "enabled": False})
    fraction = ecfg.validation_fraction if validation is None else validation
    if not 0 <= fraction < 1:
        raise ExportError(f"--validation must be in [0, 1), got {fraction}")
    _check_out(out, run_dir)
    pairs, result = run_hygiene(run_dir, hcfg, decontaminate, report_name=REPORT_NAME)
    kept = [pairs[i] for i in result.keep]
    splits = split_by_document(kept, fraction, seed)
    tmp = out.with_name(f".{out.name}.tmp-export")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        rows = {name: [ROW[fmt](p) for p in ps] for name, ps in splits.items()}
        if fmt == "hf":
            import datasets

            features = datasets.Features.from_arrow_schema(_arrow_schema())
            dd = datasets.DatasetDict({name: datasets.Dataset.from_list(r, features=features)
                                       for name, r in rows.items()})
            dd.save_to_disk(str(tmp), num_shards={name: 1 for name in rows})  # one file per split
        else:
            for name, r in rows.items():
                _write_split(tmp, fmt, name, r)
        counts = {name: len(r) for name, r in rows.items()}
        write_trainer_configs(tmp, fmt, list(rows))
        card = dataset_card(run_dir, raw, fmt, counts, result.counts, license if license is not None else ecfg.license,
                            folder=tmp, pairs=kept)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(out, fmt, counts, result.counts, run_dir / REPORT_NAME)


def _columns(fmt: str) -> str:
    main = {"prompt-completion": "`prompt` (a user turn holding the question), `completion` (an assistant turn "
                                 "holding the answer)",
            "messages": "`messages` (a user turn holding the question, an assistant turn holding the answer)",
            "alpaca": "`instruction` (the question), `input` (empty), `output` (the answer)",
            "sharegpt": "`conversations` (`human` then `gpt` turn)",
            "parquet": "`question`, `answer`", "hf": "`question`, `answer`"}[fmt]
    return (f"{main}; provenance: `doc_id` (corpus document id), `cluster` (its k-means cluster), `round` "
            "(selection round, 0 = warm-up), `extractor`, `rule` (the heuristic extractor's rule, else null)")


def detect_language(pairs: list[dict[str, Any]], limit: int = 300) -> str | None:
    """``en`` when English stop words make at least a fifth of the words of (the first ``limit``) pairs, else
    None (the card then states no language rather than a guess)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    toks = [w for p in pairs[:limit] for w in words(f"{p.get('question', '')} {p.get('answer', '')}") if w.isalpha()]
    return "en" if toks and sum(w in ENGLISH_STOP_WORDS for w in toks) / len(toks) >= 0.2 else None


def dataset_card(run_dir: Path, cfg: dict[str, Any], fmt: str, splits: dict[str, int], hyg: dict[str, Any],
                 license: str | None, folder: Path | None = None, pairs: list[dict[str, Any]] | None = None) -> str:
    """The README.md dataset card: where the pairs come from, how many, how they were cleaned, the licence, and
    how to train on them (TRL, LLaMA-Factory, axolotl). Files are named by name and content hash."""
    s = read_json(run_dir / "summary.json", {}) or {}
    llm = (cfg.get("extract") or {}).get("llm") or {}
    extractor = (s.get("extractor") or {}).get("name") or (cfg.get("extract") or {}).get("name")
    model = llm.get("model") if extractor == "openai" else "none (rule-based)"
    ext = {"parquet": "parquet", "hf": None}.get(fmt, "jsonl")
    corpus_name = Path(str(cfg.get("corpus", ""))).name
    language = detect_language(pairs or [])
    front: dict[str, Any] = {"license": license or "unknown", "pretty_name": f"equal QA pairs from {corpus_name}",
                             **({"language": [language]} if language else {}),
                             "task_categories": ["question-answering", "text-generation"],
                             "tags": ["equal", "instruction-tuning", "synthetic"],
                             "size_categories": [_size_category(sum(splits.values()))]}
    if ext:
        front["configs"] = [{"config_name": "default", "data_files": [
            {"split": name, "path": f"{name}.{ext}"} for name in splits]}]
    dec = hyg.get("decontaminate") or {}
    quality = " / ".join(str(hyg.get(r, 0)) for r in DROP_RULES)
    lines = [
        "---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
        f"# QA pairs extracted by equal from `{corpus_name}`", "",
        "Instruction-tuning question-answer pairs extracted with "
        "[equal](https://arxiv.org/abs/2505.12250) (EQUAL: a bandit over k-means clusters of the corpus, "
        "rewarded by the optimal-transport similarity of the extracted pairs to a reference set).", "",
        "| | |", "|---|---|",
        f"| source corpus | `{file_label(cfg.get('corpus'), run_dir)}` ({s.get('docs_total')} documents) |",
        f"| reference set | `{file_label(cfg.get('reference'), run_dir)}` ({(s.get('reference') or {}).get('items')} "
        "items) |",
        f"| budget | {cfg.get('budget')} → {(s.get('plan') or {}).get('budget_docs')} documents; "
        f"{s.get('docs_extracted')} extracted |",
        f"| selection policy | {s.get('policy', cfg.get('policy'))} (seed {cfg.get('seed')}) |",
        f"| extractor / model | {extractor} / {model} |",
        f"| final OT distance to the reference | {_num(s.get('final_ot'))} |",
        f"| pairs extracted (`dataset.jsonl`) | {hyg.get('pairs')} |",
        f"| dropped: contaminated | {hyg.get('contaminated', 0)} |",
        f"| dropped by quality rules: {' / '.join(r.replace('_', ' ') for r in DROP_RULES)} | {quality} |",
        f"| dropped: exact duplicates / near duplicates | {hyg.get('exact_duplicate', 0)} / "
        f"{hyg.get('near_duplicate', 0)} |",
        f"| pairs in this dataset | {' + '.join(f'{n} {k}' for k, n in splits.items())} |",
        f"| language | {language or 'not detected (fewer than a fifth of the words are English stop words)'} |",
        f"| licence | {license or 'unknown (set export.license or --license)'} |",
        f"| equal version | {s.get('equal_version')} |",
        "",
        "## Format", "", f"`{fmt}`: " + _columns(fmt) + ".", "",
        "## Hygiene", "",
        *(_hygiene_lines(cfg, hyg, dec) if hyg.get("enabled", True) else ["Hygiene was turned off for this export."]),
        f"Every dropped pair is listed, with its reason, in the run folder's `{hyg.get('report', REPORT_NAME)}`.",
        "",
        *card_section(fmt, list(splits), folder),
    ]
    return "\n".join(lines)


def _hygiene_lines(cfg: dict[str, Any], hyg: dict[str, Any], dec: dict[str, Any]) -> list[str]:
    h = {**HygieneConfig().__dict__, **(cfg.get("hygiene") or {})}
    rules = h.get("drop_rules") or []
    return [
        (f"Decontaminated against {_eval_sets(dec)}: a pair sharing a {dec['ngram']}-word sequence with any item "
         "is removed." if dec else "No evaluation set was given for decontamination."),
        (f"Quality rules ({', '.join(f'`{r}`' for r in rules)}): a pair goes when its question is a bare heading, "
         "a macro or a label rather than a question, a problem or an instruction (`heading_question`), its answer is "
         "only headings (`heading_answer`) or only links (`link_answer`), or it is shorter than "
         f"{h.get('min_question_words')} question words / {h.get('min_answer_words')} answer word(s) (`short`)."
         if rules else "No quality rules were applied."),
        f"Exact duplicates (same lower-cased words) and near duplicates (Jaccard of word shingles ≥ "
        f"{h.get('near_threshold')}, MinHash LSH) are removed, keeping the first.",
    ]


def _eval_sets(dec: dict[str, Any]) -> str:
    digests = dec.get("sha256") or [""] * len(dec["files"])
    return ", ".join(f"`{Path(f).name}` (sha256 {d[:12]}, {n} items)" for f, d, n in zip(dec["files"], digests, dec["items"]))


def _num(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, (int, float)) else "n/a"


def _size_category(n: int) -> str:
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < bound:
            return name
    return "n>1M"
