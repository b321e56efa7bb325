"""Command-line flags generated from the config dataclasses' field metadata (TRL style).

A flag is one line of an alias table: its name and the dotted config field it sets. Its type, choices and help
come from the field (``metadata["help"]``, a ``Literal`` type's values), so the CLI never repeats the config.
Every other field is reachable with ``--set dotted.name=value``.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from ..config import Config, ConfigError

#: (group, flag, dotted config field) of `run`, `extract-all`, `compare` and `config`
RUN_FLAGS: list[tuple[str, str, str]] = [
    ("inputs and output", "corpus", "corpus"),
    ("inputs and output", "reference", "reference"),
    ("inputs and output", "out", "out"),
    ("selection", "budget", "budget"),
    ("selection", "clusters", "cluster.k"),
    ("selection", "align", "align.mode"),
    ("selection", "embedder", "embed.model"),
    ("selection", "seed", "seed"),
    ("selection", "policy", "policy"),
    ("extraction", "extractor", "extract.name"),
    ("extraction", "llm-base-url", "extract.llm.base_url"),
    ("extraction", "llm-model", "extract.llm.model"),
    ("extraction", "llm-concurrency", "extract.llm.concurrency"),
    ("extraction", "cache-dir", "extract.cache_dir"),
    ("other", "executor", "executor"),
]

#: (flag, TrainConfig field) of `train`
TRAIN_FLAGS: list[tuple[str, str]] = [
    ("max-steps", "max_steps"), ("epochs", "epochs"), ("lr", "learning_rate"), ("batch-size", "batch_size"),
    ("max-length", "max_length"), ("lora-r", "lora_r"), ("device", "device"), ("threads", "threads"),
]


def field_of(cls: type, dotted: str) -> tuple[dataclasses.Field, Any]:
    """The dataclass field ``dotted`` names under ``cls`` and its type hint."""
    *parents, name = dotted.split(".")
    for part in parents:
        cls = get_type_hints(cls)[part]
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f, get_type_hints(cls)[name]


def _plain(tp: Any) -> Any:
    """``X | None`` -> ``X``."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def flag_kwargs(f: dataclasses.Field, tp: Any, dotted: str, flag: str) -> dict[str, Any]:
    """``add_argument`` keywords for flag ``--flag`` setting field ``dotted`` (``f``, of type ``tp``)."""
    tp = _plain(tp)
    kw: dict[str, Any] = {"help": f"{f.metadata.get('help', '')} (config: {dotted})".strip(),
                          "default": None, "dest": dotted.replace(".", "__"),
                          "metavar": flag.upper().replace("-", "_")}
    if get_origin(tp) is Literal:
        kw["choices"] = list(get_args(tp))
        kw["metavar"] = "{" + ",".join(map(str, kw["choices"])) + "}"
    elif tp in (int, float):
        kw["type"] = tp
    return kw


def add_run_flags(p: argparse.ArgumentParser, config_cls: type) -> None:
    groups: dict[str, Any] = {}
    for group, flag, dotted in RUN_FLAGS:
        if group not in groups:
            groups[group] = p.add_argument_group(group)
        g = groups[group]
        g.add_argument(f"--{flag}", **flag_kwargs(*field_of(config_cls, dotted), dotted, flag))
        if flag == "out":
            g.add_argument("--config", help="YAML config file; flags override its values.")
        if flag == "cache-dir":
            g.add_argument("--no-cache", action="store_true", help="Do not read or write the extraction cache "
                           "(config: extract.cache=false).")
    groups["other"].add_argument("--set", action="append", metavar="KEY=VALUE",
                                 help="Override any config field by dotted name, e.g. --set bandit.alpha=0.05 "
                                 "(repeatable).")


def run_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The dotted config values the flags of :data:`RUN_FLAGS` set on the command line."""
    out = {}
    for _, _, dotted in RUN_FLAGS:
        value = getattr(args, dotted.replace(".", "__"), None)
        if value is not None:
            out[dotted] = value
    if getattr(args, "no_cache", False):
        out["extract.cache"] = False
    return out


def add_train_flags(p: argparse.ArgumentParser, train_cls: type) -> None:
    for flag, name in TRAIN_FLAGS:
        p.add_argument(f"--{flag}", **flag_kwargs(*field_of(train_cls, name), name, flag))


def train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {name: v for _, name in TRAIN_FLAGS if (v := getattr(args, name, None)) is not None}


def parse_set(values: list[str]) -> dict[str, Any]:
    out = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(raw)
    return out


def load_config(args: argparse.Namespace) -> Config:
    cfg = Config.from_yaml(args.config) if getattr(args, "config", None) else Config()
    overrides: dict[str, Any] = run_overrides(args)
    overrides.update(parse_set(getattr(args, "set", None) or []))
    if getattr(args, "decontaminate", None):
        base = overrides.get("hygiene.decontaminate", cfg.hygiene.decontaminate) or []
        overrides["hygiene.decontaminate"] = [*base, *args.decontaminate]
    return cfg.replace(**overrides) if overrides else cfg
