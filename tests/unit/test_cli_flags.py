"""The CLI's flags are generated from the config dataclasses: their help, choices and types are the fields'."""

from __future__ import annotations

import pytest

from equal.cli import build_parser
from equal.cli.flags import RUN_FLAGS, TRAIN_FLAGS, field_of, load_config
from equal.config import Config


def _action(parser, command, flag):
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return next(a for a in sub._actions if f"--{flag}" in a.option_strings)


@pytest.mark.parametrize("command", ["run", "extract-all", "compare", "config"])
def test_every_run_flag_carries_its_fields_help_and_choices(command):
    parser = build_parser()
    for _, flag, dotted in RUN_FLAGS:
        f, _ = field_of(Config, dotted)
        a = _action(parser, command, flag)
        assert f.metadata["help"] in a.help and dotted in a.help
    assert _action(parser, command, "align").choices == ["adapter", "full", "none"]
    assert _action(parser, command, "executor").choices == ["local", "ray"]
    assert _action(parser, command, "clusters").type is int and _action(parser, command, "budget").type is float


def test_train_flags_carry_the_train_configs_help():
    from equal.tune.train import TrainConfig

    parser = build_parser()
    for flag, name in TRAIN_FLAGS:
        f, _ = field_of(TrainConfig, name)
        assert f.metadata["help"] in _action(parser, "train", flag).help


def test_flags_and_set_reach_the_config():
    args = build_parser().parse_args(["run", "--corpus", "c.jsonl", "--clusters", "7", "--align", "none",
                                      "--llm-concurrency", "3", "--no-cache", "--set", "bandit.alpha=0.5",
                                      "--budget", "0.2"])
    cfg = load_config(args)
    assert (cfg.corpus, cfg.cluster.k, cfg.align.mode, cfg.extract.llm.concurrency, cfg.extract.cache,
            cfg.bandit.alpha, cfg.budget) == ("c.jsonl", 7, "none", 3, False, 0.5, 0.2)
    assert load_config(build_parser().parse_args(["run"])) == Config()  # no flag: the defaults


def test_a_bad_choice_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["run", "--align", "sideways"])
    assert e.value.code == 2 and "sideways" in capsys.readouterr().err
