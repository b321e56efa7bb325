"""Every export read by its consumers as it is: ``datasets.load_dataset(<folder>)`` with no arguments, TRL's
``SFTTrainer`` on the ``prompt-completion`` export (two steps on a tiny model; the collated labels mask the
prompt), LLaMA-Factory's ``dataset_info.json`` and the ``axolotl.yaml`` block; a re-export into a folder that
holds only equal's own files.

LLaMA-Factory: the schema test checks the entries against the fields LLaMA-Factory 0.9.5 documents in
``llamafactory/data/parser.py`` (``DatasetAttr``) and reads the rows the way its alpaca and sharegpt converters
do; where ``llamafactory`` is importable (or its wheel's source is given in ``LLAMAFACTORY_SRC``), its own
``get_dataset_list`` reads ``dataset_info.json`` and its own converters turn every row into its prompt/response
(:func:`test_llamafactory_reads_the_export_with_its_own_parser_and_converters`).
"""

import json
import math
import shutil

import pytest
import yaml

from equal.cli import main

pytestmark = pytest.mark.slow

FORMATS = ("prompt-completion", "messages", "alpaca", "sharegpt", "parquet", "hf")
# LLaMA-Factory 0.9.5, llamafactory/data/parser.py: DatasetAttr.join() reads these keys of an entry
LF_ENTRY_KEYS = {"file_name", "formatting", "ranking", "subset", "split", "folder", "num_samples", "columns", "tags"}
LF_COLUMNS = {"prompt", "query", "response", "history", "messages", "system", "tools", "images", "videos", "audios",
              "chosen", "rejected", "kto_tag"}
LF_TAGS = {"role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag", "system_tag"}
LF_FILE_TYPES = {"arrow", "csv", "json", "jsonl", "parquet", "txt"}  # extras/constants.py FILEEXT2TYPE
AXOLOTL_TYPES = {"prompt-completion": None, "messages": "chat_template", "alpaca": "alpaca",
                 "sharegpt": "chat_template", "parquet": "alpaca_chat.load_qa", "hf": "alpaca_chat.load_qa"}


@pytest.fixture(scope="module")
def run_copy(math_cli_run, tmp_path_factory):
    src, _ = math_cli_run
    dst = tmp_path_factory.mktemp("export-trainers") / "run"
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def exports(run_copy, tmp_path_factory):
    """Every format exported with a validation split: {format: folder}."""
    base = tmp_path_factory.mktemp("exports")
    out = {}
    for fmt in FORMATS:
        out[fmt] = base / fmt
        assert main(["export", str(run_copy), "--format", fmt, "--out", str(out[fmt]), "--validation", "0.25"]) == 0
    return out


def _rows(folder, fmt, split):
    import datasets

    if fmt == "hf":
        return list(datasets.load_from_disk(str(folder))[split])
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(folder / f"{split}.parquet").to_pylist()
    return [json.loads(x) for x in (folder / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]


def test_every_export_loads_with_load_dataset_on_the_folder_and_re_exports_in_place(exports, run_copy, tmp_path):
    import datasets

    for fmt, folder in exports.items():
        if fmt == "hf":
            dd = datasets.load_from_disk(str(folder))
        else:  # no arguments: the card's configs name the split files; dataset_info.json / axolotl.yaml ignored
            dd = datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "cache" / fmt))
        assert set(dd) == {"train", "validation"}, fmt
        assert len(dd["train"]) == len(_rows(folder, fmt, "train")) > 0
        names = {p.name for p in folder.iterdir()}
        assert ("dataset_info.json" in names) == (fmt != "prompt-completion")
        assert ("axolotl.yaml" in names) == (fmt != "prompt-completion")
        # the folder holds only equal's files: a second export (another format) replaces it whole
        other = "alpaca" if fmt != "alpaca" else "prompt-completion"
        assert main(["export", str(run_copy), "--format", other, "--out", str(folder)]) == 0, fmt
        assert (folder / "train.jsonl").is_file() and not (folder / "validation.jsonl").exists()
        assert main(["export", str(run_copy), "--format", fmt, "--out", str(folder), "--validation", "0.25"]) == 0
    pc = _rows(exports["prompt-completion"], "prompt-completion", "train")[0]
    assert [m["role"] for m in pc["prompt"]] == ["user"] and [m["role"] for m in pc["completion"]] == ["assistant"]


def _check_lf_entry(entry, folder, fmt, split):
    """An entry read the way LLaMA-Factory 0.9.5 reads it: its keys, its file, and every row through the columns
    and tags its alpaca / sharegpt converter uses (a column not named in ``columns`` is None there)."""
    assert set(entry) <= LF_ENTRY_KEYS and {"file_name", "formatting", "columns"} <= set(entry)
    assert entry["formatting"] in ("alpaca", "sharegpt")
    assert set(entry["columns"]) <= LF_COLUMNS and set(entry.get("tags", {})) <= LF_TAGS
    path = folder / entry["file_name"]
    assert path.is_file(), path
    assert path.suffix[1:] in LF_FILE_TYPES
    rows = _rows(folder, fmt, split)
    assert rows
    cols = entry["columns"]
    for r in rows:
        if entry["formatting"] == "alpaca":
            assert isinstance(r[cols["prompt"]], str) and r[cols["prompt"]]
            assert isinstance(r[cols["response"]], str) and r[cols["response"]]
            if "query" in cols:
                assert isinstance(r[cols["query"]], str)
        else:
            tags = entry["tags"]
            turns = r[cols["messages"]]
            assert [t[tags["role_tag"]] for t in turns] == [tags["user_tag"], tags["assistant_tag"]]
            assert all(isinstance(t[tags["content_tag"]], str) and t[tags["content_tag"]] for t in turns)
    return len(rows)


def test_dataset_info_json_has_llamafactory_entries_for_train_and_validation(exports):
    for fmt, folder in exports.items():
        if fmt == "prompt-completion":
            assert not (folder / "dataset_info.json").exists()
            assert "LLaMA-Factory and axolotl have no reader" in (folder / "README.md").read_text()
            continue
        info = json.loads((folder / "dataset_info.json").read_text())
        assert set(info) == {"equal_train", "equal_validation"}, fmt
        for name, split in (("equal_train", "train"), ("equal_validation", "validation")):
            _check_lf_entry(info[name], folder, fmt, split)


def _llamafactory():
    """LLaMA-Factory's own ``data.parser`` and ``data.converter`` modules: from an installed ``llamafactory``, or
    from the source of its wheel (``pip download llamafactory==0.9.5 --no-deps`` and unzip; ``LLAMAFACTORY_SRC``
    names the folder holding ``llamafactory/``), loaded without the package's ``__init__`` (which needs
    torchaudio and the rest of its 131 dependencies). Skips when neither is there."""
    import importlib
    import importlib.util
    import os
    import sys
    import types

    src = os.environ.get("LLAMAFACTORY_SRC")
    if importlib.util.find_spec("llamafactory") is None:
        if not src or not os.path.isdir(os.path.join(src, "llamafactory", "data")):
            pytest.skip("llamafactory is not importable and LLAMAFACTORY_SRC is not set (pip install "
                        "llamafactory==0.9.5 did not finish within 10 minutes here: docs/exports.md)")
        sys.path.insert(0, src)
        if "llamafactory.data" not in sys.modules:
            pkg = types.ModuleType("llamafactory.data")
            pkg.__path__ = [os.path.join(src, "llamafactory", "data")]
            sys.modules["llamafactory.data"] = pkg
    parser = importlib.import_module("llamafactory.data.parser")
    converter = importlib.import_module("llamafactory.data.converter")
    constants = importlib.import_module("llamafactory.extras.constants")
    return parser, converter, constants


def test_llamafactory_reads_the_export_with_its_own_parser_and_converters(exports):
    import os
    from types import SimpleNamespace

    import datasets

    parser, converter, constants = _llamafactory()
    for fmt in ("messages", "alpaca", "sharegpt", "parquet", "hf"):
        folder = exports[fmt]
        for name, split in (("equal_train", "train"), ("equal_validation", "validation")):
            [attr] = parser.get_dataset_list([name], str(folder))  # reads folder/dataset_info.json
            assert attr.load_from == "file"
            path = os.path.join(str(folder), attr.dataset_name)  # as loader._load_single_dataset does
            kind = constants.FILEEXT2TYPE[os.path.splitext(path)[-1][1:]]
            ds = datasets.load_dataset(kind, data_files=[path], split=attr.split)
            conv = converter.get_dataset_converter(attr.formatting, attr,
                                                   SimpleNamespace(media_dir=str(folder), dataset_dir=str(folder)))
            rows = _rows(folder, fmt, split)
            assert len(ds) == len(rows), (fmt, split)
            for example, row in zip(ds, rows):
                out = conv(example)
                assert [m["role"] for m in out["_prompt"]] == ["user"], (fmt, out)
                assert [m["role"] for m in out["_response"]] == ["assistant"]
                q, a = _question_answer(fmt, row)
                assert out["_prompt"][0]["content"] == q and out["_response"][0]["content"] == a


def _question_answer(fmt, row):
    if fmt == "messages":
        return row["messages"][0]["content"], row["messages"][1]["content"]
    if fmt == "sharegpt":
        return row["conversations"][0]["value"], row["conversations"][1]["value"]
    if fmt == "alpaca":
        return row["instruction"], row["output"]
    return row["question"], row["answer"]


def test_axolotl_block_uses_current_types_and_the_export_columns(exports):
    for fmt, folder in exports.items():
        want = AXOLOTL_TYPES[fmt]
        if want is None:
            assert not (folder / "axolotl.yaml").exists()
            continue
        block = yaml.safe_load((folder / "axolotl.yaml").read_text())
        assert set(block) == {"datasets", "test_datasets"}
        for key, split in (("datasets", "train"), ("test_datasets", "validation")):
            [d] = block[key]
            assert d["type"] == want and d["type"] != "sharegpt"  # type: sharegpt is deprecated in axolotl
            assert (folder / d["path"]).is_file()
            row = _rows(folder, fmt, split)[0]
            if want == "chat_template":
                turns = row[d["field_messages"]]
                m = d["message_property_mappings"]
                roles = [t[m["role"]] for t in turns]
                user, assistant = d.get("roles", {}).get("user", ["user"]), d.get("roles", {}).get("assistant",
                                                                                                 ["assistant"])
                assert roles[0] in user and roles[1] in assistant and turns[1][m["content"]]
            elif want == "alpaca":
                assert {"instruction", "input", "output"} <= set(row)
            else:  # alpaca_chat.load_qa reads question / answer
                assert {"question", "answer"} <= set(row)
        if fmt == "sharegpt":
            assert block["datasets"][0]["field_messages"] == "conversations"


def test_trl_sft_trainer_on_the_prompt_completion_export_masks_the_prompt(exports, tmp_path):
    import datasets
    import torch
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from equal.tune.tiny import make_tiny_model

    model_dir = make_tiny_model(tmp_path / "tiny")
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    ds = datasets.load_dataset(str(exports["prompt-completion"]), cache_dir=str(tmp_path / "cache"))

    def length(r):
        return len(tok.apply_chat_template(r["prompt"] + r["completion"], tokenize=True, return_dict=False))

    # rows that fit whole (no truncation, so no row is dropped and rows keep their order)
    train = ds["train"].filter(lambda r: length(r) <= 480)
    assert len(train) >= 4
    args = SFTConfig(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=4, report_to="none",
                     use_cpu=True, max_length=512, logging_steps=1, save_strategy="no", disable_tqdm=True,
                     dataloader_num_workers=0)
    trainer = SFTTrainer(model=str(model_dir), args=args, train_dataset=train, processing_class=tok)
    assert len(trainer.train_dataset) == len(train)
    ds = {"train": train}
    # the collated batch of the first four rows, as the trainer's collator builds it
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    labels, ids = batch["labels"], batch["input_ids"]
    for row in range(4):
        # the prompt as the chat template renders it with the generation prompt: every token of it is -100
        n_prompt = len(tok.apply_chat_template(ds["train"][row]["prompt"], add_generation_prompt=True,
                                               tokenize=True, return_dict=False))
        assert n_prompt > 3 and ids[row, :n_prompt].tolist() == trainer.train_dataset[row]["input_ids"][:n_prompt]
        assert (labels[row, :n_prompt] == -100).all(), "a prompt token carries a label"
        n = len(trainer.train_dataset[row]["input_ids"])
        assert n > n_prompt and (labels[row, n_prompt:n] != -100).all(), "an answer token carries no label"
        assert (labels[row, n:] == -100).all()  # padding
    result = trainer.train()
    assert trainer.state.global_step == 2 and math.isfinite(result.training_loss)
    assert torch.isfinite(torch.tensor([h["loss"] for h in trainer.state.log_history if "loss" in h])).all()


def test_the_cards_trl_call_trains_on_each_export(exports, tmp_path, monkeypatch):
    """The TRL snippet each card prints, run as it is from the export folder (the model swapped for the tiny one
    and one step): it loads the export, turns it into prompt/completion where needed, and trains."""
    import re

    from equal.tune.tiny import make_tiny_model

    model_dir = make_tiny_model(tmp_path / "tiny")
    for fmt in ("alpaca", "sharegpt", "hf"):
        card = (exports[fmt] / "README.md").read_text(encoding="utf-8")
        code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
        assert 'model="HuggingFaceTB/SmolLM2-135M-Instruct"' in code and 'SFTConfig(output_dir="sft-out")' in code
        code = code.replace('"HuggingFaceTB/SmolLM2-135M-Instruct"', repr(str(model_dir))).replace(
            'SFTConfig(output_dir="sft-out")',
            f'SFTConfig(output_dir={str(tmp_path / fmt)!r}, max_steps=1, use_cpu=True, report_to="none", '
            'max_length=256, save_strategy="no", disable_tqdm=True, per_device_train_batch_size=2, '
            'eval_strategy="no")')
        monkeypatch.chdir(exports[fmt])
        scope: dict = {}
        exec(compile(code, f"{fmt}/README.md", "exec"), scope)
        trainer = scope["trainer"]
        assert trainer.state.global_step == 1, fmt
        # prompt/completion: the prompt is masked (TRL marks it by completion_mask or by -100 labels, by version)
        row = trainer.train_dataset[0]
        if "completion_mask" in row:
            mask = row["completion_mask"]
        else:
            mask = [int(x != -100) for x in row["labels"]]
        assert 0 in mask and 1 in mask and mask.index(1) > 0, fmt
