"""The trainers' dataset configs written into every export folder, and the card's "how to train" section.

* ``dataset_info.json`` (LLaMA-Factory, ``dataset_dir`` = the export folder): an ``equal_train`` entry and,
  with a validation split, an ``equal_validation`` entry, with LLaMA-Factory's documented fields
  (``file_name``, ``formatting`` alpaca|sharegpt, ``columns``, ``tags`` for the sharegpt role/content mapping;
  ``llamafactory/data/parser.py``). A column or tag left out of an entry is None there, so an entry names
  every column it reads. TRL's ``prompt-completion`` format has no LLaMA-Factory converter (its columns hold
  lists of turns, LLaMA-Factory's alpaca columns strings): no ``dataset_info.json`` for that format.
* ``axolotl.yaml``: a ``datasets:`` block (and ``test_datasets:`` for the validation split) with axolotl's
  current types: alpaca → ``alpaca``; messages → ``chat_template``; sharegpt → ``chat_template`` with
  ``field_messages: conversations`` and the role/content mapping (``type: sharegpt`` is deprecated there);
  parquet and hf → ``alpaca_chat.load_qa`` (``question``/``answer`` columns). Paths are relative to the export
  folder: run axolotl from it, or make them absolute.
* The TRL call for the card: ``load_dataset`` on the export, mapped to TRL's conversational prompt/completion
  where the format is not one TRL reads as it is, so that the loss falls on the answer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

LLAMAFACTORY_FILE = "dataset_info.json"
AXOLOTL_FILE = "axolotl.yaml"
ENTRY = {"train": "equal_train", "validation": "equal_validation"}

_LF: dict[str, dict[str, Any]] = {
    "alpaca": {"formatting": "alpaca", "columns": {"prompt": "instruction", "query": "input", "response": "output"}},
    "sharegpt": {"formatting": "sharegpt", "columns": {"messages": "conversations"},
                 "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"}},
    "messages": {"formatting": "sharegpt", "columns": {"messages": "messages"},
                 "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                          "assistant_tag": "assistant", "system_tag": "system"}},
    "parquet": {"formatting": "alpaca", "columns": {"prompt": "question", "response": "answer"}},
    "hf": {"formatting": "alpaca", "columns": {"prompt": "question", "response": "answer"}},
}

_AXOLOTL: dict[str, dict[str, Any]] = {
    "alpaca": {"type": "alpaca"},
    "messages": {"type": "chat_template", "field_messages": "messages",
                 "message_property_mappings": {"role": "role", "content": "content"}},
    "sharegpt": {"type": "chat_template", "field_messages": "conversations",
                 "message_property_mappings": {"role": "from", "content": "value"},
                 "roles": {"user": ["human"], "assistant": ["gpt"]}},
    "parquet": {"type": "alpaca_chat.load_qa"},
    "hf": {"type": "alpaca_chat.load_qa"},
}

# TRL: a .map() to conversational prompt/completion (loss on the completion only), per format
_TO_PC = {
    "alpaca": ('r["instruction"]', 'r["output"]'),
    "sharegpt": ('r["conversations"][0]["value"]', 'r["conversations"][1]["value"]'),
    "parquet": ('r["question"]', 'r["answer"]'),
    "hf": ('r["question"]', 'r["answer"]'),
}


def data_file(fmt: str, split: str, folder: Path | None = None) -> str:
    """The file (relative to the export folder) that holds ``split``; for ``hf`` the split's one Arrow shard."""
    if fmt == "parquet":
        return f"{split}.parquet"
    if fmt == "hf":
        shards = sorted(p.name for p in (folder / split).glob("*.arrow")) if folder is not None else []
        return f"{split}/{shards[0] if len(shards) == 1 else 'data-00000-of-00001.arrow'}"
    return f"{split}.jsonl"


def llamafactory_info(fmt: str, splits: list[str], folder: Path | None = None) -> dict[str, Any] | None:
    """LLaMA-Factory's ``dataset_info.json`` for an export of ``fmt`` with ``splits``; None where it reads none."""
    if fmt not in _LF:
        return None
    return {ENTRY[s]: {"file_name": data_file(fmt, s, folder), **json.loads(json.dumps(_LF[fmt]))} for s in splits}


def axolotl_config(fmt: str, splits: list[str], folder: Path | None = None) -> dict[str, Any] | None:
    """The ``datasets:`` (and ``test_datasets:``) block of an axolotl config; None where axolotl reads none."""
    if fmt not in _AXOLOTL:
        return None
    ds_type = {"parquet": "parquet", "hf": "arrow"}.get(fmt, "json")

    def entry(split: str) -> dict[str, Any]:
        return {"path": data_file(fmt, split, folder), "ds_type": ds_type, "split": "train", **_AXOLOTL[fmt]}

    out: dict[str, Any] = {"datasets": [entry("train")]}
    if "validation" in splits:
        out["test_datasets"] = [entry("validation")]
    return out


def write_trainer_configs(folder: Path, fmt: str, splits: list[str]) -> list[str]:
    """Write ``dataset_info.json`` and ``axolotl.yaml`` into the export ``folder``; returns the names written."""
    written = []
    info = llamafactory_info(fmt, splits, folder)
    if info is not None:
        (folder / LLAMAFACTORY_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        written.append(LLAMAFACTORY_FILE)
    ax = axolotl_config(fmt, splits, folder)
    if ax is not None:
        text = ("# axolotl: the datasets of this export (paths relative to this folder: run axolotl from here,\n"
                "# or make them absolute); add it to your axolotl config.\n" + yaml.safe_dump(ax, sort_keys=False))
        (folder / AXOLOTL_FILE).write_text(text, encoding="utf-8")
        written.append(AXOLOTL_FILE)
    return written


def trl_snippet(fmt: str, splits: list[str]) -> str:
    """Python that trains on the export with TRL's ``SFTTrainer``, the loss on the answer."""
    if fmt == "hf":
        load = 'ds = load_from_disk(".")'
        imp = "from datasets import load_from_disk"
    else:
        kind = "parquet" if fmt == "parquet" else "json"
        files = ", ".join(f'"{s}": "{data_file(fmt, s)}"' for s in splits)
        load = f'ds = load_dataset("{kind}", data_files={{{files}}})'
        imp = "from datasets import load_dataset"
    lines = [imp, "from trl import SFTConfig, SFTTrainer", "", load]
    if fmt in _TO_PC:
        q, a = _TO_PC[fmt]
        lines += ["# TRL's conversational prompt/completion: the loss falls on the answer only",
                  f'ds = ds.map(lambda r: {{"prompt": [{{"role": "user", "content": {q}}}],',
                  f'                       "completion": [{{"role": "assistant", "content": {a}}}]}},',
                  '            remove_columns=ds["train"].column_names)']
    args = 'SFTConfig(output_dir="sft-out")'
    if fmt == "messages":
        lines.append("# messages: the loss covers the whole conversation unless the chat template marks the "
                     "assistant turns")
        lines.append("# ({% generation %}) and assistant_only_loss=True; the prompt-completion export needs neither")
    ev = ', eval_dataset=ds["validation"]' if "validation" in splits else ""
    lines += [f'trainer = SFTTrainer(model="HuggingFaceTB/SmolLM2-135M-Instruct", args={args},',
              f'                     train_dataset=ds["train"]{ev})', "trainer.train()"]
    return "\n".join(lines)


def card_section(fmt: str, splits: list[str], folder: Path | None = None) -> list[str]:
    """The card's "Training on it" section: the TRL call, the LLaMA-Factory entry and the axolotl block."""
    lines = ["## Training on it", "", "**TRL** (`SFTTrainer`), from this folder:", "", "```python",
             trl_snippet(fmt, splits), "```", ""]
    info = llamafactory_info(fmt, splits, folder)
    if info is not None:
        lines += [f"**LLaMA-Factory**: `{LLAMAFACTORY_FILE}` in this folder holds the entries; set "
                  f"`dataset_dir` to this folder and `dataset: {ENTRY['train']}`"
                  + (f", `eval_dataset: {ENTRY['validation']}`" if "validation" in splits else "") + ".", "",
                  "```json", json.dumps(info, indent=2), "```", ""]
    ax = axolotl_config(fmt, splits, folder)
    if ax is not None:
        lines += [f"**axolotl**: `{AXOLOTL_FILE}` in this folder holds this block (paths relative to this folder).",
                  "", "```yaml", yaml.safe_dump(ax, sort_keys=False).strip(), "```", ""]
    if info is None and ax is None:
        lines += ["LLaMA-Factory and axolotl have no reader for TRL's prompt/completion lists: export `messages` "
                  "(or `alpaca`) for them; both put the loss on the answer by default.", ""]
    return lines
