"""``equal inspect``: per cluster its size, pulls, mean reward, c-TF-IDF terms and sample documents, read from
the run folder (``math_cli_run``) and its corpus; c-TF-IDF itself on clusters of known topics."""

import json
import re

import numpy as np
import pytest

from equal.cli import main
from equal.inspection import c_tf_idf, title_of

pytestmark = pytest.mark.slow

_HEAD = re.compile(r"^cluster (\d+): (\d+) documents, (\d+) pulls, mean reward (n/a|[0-9.]+)", re.M)


def test_c_tf_idf_finds_each_clusters_own_words():
    common = "the result shows that this example works well in practice "
    texts = {
        0: [common + "whisk the eggs with flour and butter, bake the cake in the oven"] * 3
           + [common + "butter and sugar, then flour; bake until golden"],
        1: [common + "def parse(line): return json.loads(line) # python function"] * 2
           + [common + "a python list comprehension and a function with a return value"],
        2: [common + "solve the equation x^2 - 5x + 6 = 0; the roots of the polynomial are 2 and 3"] * 2
           + [common + "factor the polynomial and check each root in the equation"],
    }
    terms = c_tf_idf(texts, top=4)
    assert set(terms[0]) <= {"bake", "flour", "butter", "whisk", "eggs", "cake", "oven", "sugar", "golden"}
    assert {"python", "function"} <= set(terms[1])
    assert {"polynomial", "equation"} <= set(terms[2])
    for words in terms.values():  # shared by every cluster: never distinctive; stop words never counted
        assert not {"result", "shows", "example", "works", "practice", "the", "and"} & set(words)


def test_title_of_takes_the_first_real_line():
    assert title_of("\n\n## Sorting lists ##\nbody") == "Sorting lists"
    assert title_of("x" * 200).endswith("…") and len(title_of("x" * 200)) == 90


def test_inspect_lists_every_cluster_with_the_runs_figures(math_cli_run, capsys):
    run_dir, _ = math_cli_run
    assert main(["inspect", str(run_dir)]) == 0
    out = capsys.readouterr().out
    summary = json.loads((run_dir / "summary.json").read_text())
    arms = summary["arms"]
    heads = _HEAD.findall(out)
    assert sorted(int(c) for c, *_ in heads) == list(range(len(arms["sizes"])))
    for c, size, pulls, mean in heads:
        c = int(c)
        assert int(size) == arms["sizes"][c] and int(pulls) == arms["pulls"][c]
        m = arms["mean_reward"][c]
        assert (mean == "n/a") if m is None else abs(float(mean) - m) < 1e-4
    means = [float(m) for *_, m in heads if m != "n/a"]
    assert means == sorted(means, reverse=True)  # best first
    assert out.count("  terms: ") == len(heads)  # the corpus was found: terms for every cluster
    assert sum(int(s) for _, s, _, _ in heads) == summary["docs_total"]


def test_inspect_one_cluster_shows_its_own_documents(math_cli_run, slice400, capsys):
    run_dir, _ = math_cli_run
    labels = np.load(run_dir / "state" / "clusters.npz")["labels"]
    c = int(np.bincount(labels).argmax())
    assert main(["inspect", str(run_dir), "--cluster", str(c)]) == 0
    out = capsys.readouterr().out
    assert [int(x) for x, *_ in _HEAD.findall(out)] == [c]
    docs = [json.loads(line)["text"] for line in open(slice400, encoding="utf-8")]
    own = {title_of(t) for t, lab in zip(docs, labels) if lab == c}
    shown = re.findall(r"^  doc:   (.*)$", out, re.M)
    assert len(shown) == min(8, int((labels == c).sum()))
    assert set(shown) <= own  # sample documents are the cluster's own
    assert main(["inspect", str(run_dir), "--cluster", "999"]) == 2
    err = capsys.readouterr().err
    assert "cluster 999 does not exist" in err and len(err.strip().splitlines()) == 1
