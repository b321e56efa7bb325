import subprocess
import sys

import pytest
import yaml

from equal.cli import build_parser, main
from equal.cli.flags import load_config as _load_config
from equal.config import Config, ConfigError, iter_fields, result_fields_changed


def test_every_field_is_documented():
    fields = list(iter_fields())
    assert len(fields) > 40
    for name, _default, help_text in fields:
        assert help_text and len(help_text) > 10, name


def test_yaml_round_trip_and_nested_override(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("budget: 0.2\ncluster:\n  k: 12\nextract:\n  llm:\n    concurrency: 4\n")
    cfg = Config.from_yaml(p)
    assert (cfg.budget, cfg.cluster.k, cfg.extract.llm.concurrency) == (0.2, 12, 4)
    assert cfg.bandit.docs_per_pull == Config().bandit.docs_per_pull
    again = Config.from_dict(yaml.safe_load(cfg.to_yaml(comments=False)))
    assert again == cfg
    commented = cfg.to_yaml(comments=True)
    assert "# Number of clusters" in commented
    assert Config.from_dict(yaml.safe_load(commented)) == cfg


@pytest.mark.parametrize("text,needle", [
    ("clusterr:\n  k: 3\n", "unknown config field(s): clusterr"),
    ("cluster:\n  kk: 3\n", "cluster.kk"),
    ("budget: lots\n", "budget: expected a number"),
    ("align:\n  mode: partial\n", "is not one of"),
    ("budget: -1\n", "budget must be > 0"),
    ("- a\n- b\n", "mapping"),
])
def test_bad_config_gives_one_clear_error(tmp_path, text, needle):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=None) as e:
        Config.from_yaml(p)
    assert needle in str(e.value)


def test_flags_override_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("budget: 0.3\nseed: 5\nembed:\n  model: some/model\n")
    args = build_parser().parse_args(["run", "--config", str(p), "--budget", "0.05", "--clusters", "9",
                                      "--extractor", "openai", "--llm-concurrency", "3",
                                      "--set", "bandit.alpha=0.5", "--no-cache"])
    cfg = _load_config(args)
    assert cfg.budget == 0.05 and cfg.seed == 5 and cfg.cluster.k == 9
    assert cfg.extract.name == "openai" and cfg.extract.llm.concurrency == 3
    assert cfg.bandit.alpha == 0.5 and cfg.embed.model == "some/model" and cfg.extract.cache is False


def test_config_show_prints_the_effective_config(capsys, tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("seed: 7\n")
    assert main(["config", "--show", "--config", str(p), "--budget", "200"]) == 0
    out = capsys.readouterr().out
    data = yaml.safe_load(out)
    assert data["seed"] == 7 and data["budget"] == 200
    assert "# Extraction budget" in out


def test_result_fields_changed_ignores_operational_fields():
    a = Config().to_dict()
    b = Config().replace(**{"extract.llm.concurrency": 64, "out": "elsewhere", "cluster.k": 7}).to_dict()
    assert result_fields_changed(a, b) == ["cluster.k"]


def test_cli_help_documents_every_run_flag():
    out = subprocess.run([sys.executable, "-m", "equal.cli", "run", "--help"], capture_output=True, text=True).stdout
    for flag in ["--corpus", "--reference", "--out", "--config", "--budget", "--clusters", "--extractor",
                 "--embedder", "--seed", "--llm-base-url", "--llm-model", "--llm-concurrency", "--cache-dir",
                 "--no-cache", "--restart", "--quiet", "--json", "--dry-run", "--log-level"]:
        assert flag in out


@pytest.mark.parametrize("where", ["before", "after"])
def test_log_level_flag_sets_the_logging_level(where, capsys):
    import logging

    from equal.cli import main

    args = ["config", "--show", "--log-level", "DEBUG"] if where == "after" else ["--log-level", "error", "config"]
    try:
        assert main(args) == 0
        assert logging.getLogger().level == (logging.DEBUG if where == "after" else logging.ERROR)
        yaml.safe_load(capsys.readouterr().out)  # stdout holds the config alone
    finally:
        logging.getLogger().setLevel(logging.WARNING)


def test_spend_caps_are_validated_and_may_change_on_resume():
    with pytest.raises(ConfigError, match="needs a price"):
        Config().replace(**{"extract.llm.max_cost": 5})
    with pytest.raises(ConfigError, match="max_tokens_total"):
        Config().replace(**{"extract.llm.max_tokens_total": 0})
    a = Config().to_dict()
    b = Config().replace(**{"extract.llm.max_tokens_total": 10, "extract.llm.price_prompt_per_mtok": 1.0,
                            "extract.llm.max_cost": 2.0}).to_dict()
    assert result_fields_changed(a, b) == []  # a resume may raise a cap


def test_bad_config_on_the_command_line_exits_2_without_traceback(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("cluster:\n  k: zero\n")
    r = subprocess.run([sys.executable, "-m", "equal.cli", "config", "--config", str(p)], capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "cluster.k: expected an integer" in r.stderr


def test_config_reference_doc_is_in_sync():
    from pathlib import Path

    from equal.docs import config_markdown

    doc = Path(__file__).resolve().parents[2] / "docs" / "config.md"
    assert doc.read_text() == config_markdown(), "run: python -m equal.docs > docs/config.md"


def test_role_similarities_and_warmup_pool_factor_are_validated():
    cfg = Config().replace(**{"bandit.prior_similarity": "knn", "align.warmup_similarity": None,
                              "bandit.similarity": "mix", "align.warmup_pool_factor": 2})
    assert cfg.bandit.prior_similarity == "knn" and cfg.align.warmup_pool_factor == 2.0
    assert cfg.align.warmup_similarity is None
    # the shipped default: the prior's line on mean cosine, the warm-up pool by mix, 2.5 warm-up sizes
    assert (Config().bandit.prior_similarity, Config().align.warmup_similarity) == ("mean", "mix")
    assert Config().align.warmup_pool_factor == 2.5
    with pytest.raises(ConfigError, match="prior_similarity"):
        Config().replace(**{"bandit.prior_similarity": "median"})
    with pytest.raises(ConfigError, match="warmup_pool_factor"):
        Config().replace(**{"align.warmup_pool_factor": 0.5}).validate()
