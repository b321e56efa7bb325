"""The pieces of the downstream grid that need no model: the split by source, LaTeX as plain text, and the
report's rank agreement between proxies and the judge."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import downstream as D  # noqa: E402
import split_by_source as S  # noqa: E402


def test_split_puts_each_source_in_one_half_and_balances_each_label():
    counts = {("math", "book"): 600, ("math", "contest"): 450, ("math", "stats"): 400,
              ("code", "docs"): 1000, ("code", "exercises"): 500, ("code", "book2"): 450,
              ("other", "novel"): 300, ("other", "facts"): 280, ("code", "facts"): 5}
    half = S.assign(counts)
    assert set(half) == {"book", "contest", "stats", "docs", "exercises", "book2", "novel", "facts"}
    # largest first within a label, each to the half with fewer documents of that label (ties to A)
    assert half["book"] == "A" and half["contest"] == "B" and half["stats"] == "B"
    assert half["docs"] == "A" and half["exercises"] == "B" and half["book2"] == "B"
    assert half["novel"] == "A" and half["facts"] == "B"  # "facts" is "other" by its majority


def test_split_writes_disjoint_halves(tmp_path):
    rows = [{"id": f"d{i}", "text": "x", "source": f"s{i % 5}", "domain": "math" if i % 5 < 2 else "other"}
            for i in range(50)]
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    S.main(["--corpus", str(corpus), "--out", str(tmp_path / "h")])
    a = [json.loads(x) for x in (tmp_path / "h" / "A.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "h" / "B.jsonl").read_text().splitlines()]
    assert len(a) + len(b) == 50 and a and b
    assert not {r["source"] for r in a} & {r["source"] for r in b}
    assert sorted(r["id"] for r in a + b) == sorted(r["id"] for r in rows)


@pytest.mark.parametrize("tex, plain", [
    (r"so $16-12=\boxed{4}$.", "so 16-12=4."),
    (r"$\dfrac{4!}{2!} = 12$", "4!/2! = 12"),
    (r"Larry has $\$$35 and won $25\%$", "Larry has $35 and won 25%"),
    (r"$2 \times 3 \cdot 4 \le 30$", "2 * 3 * 4 <= 30"),
    (r"$\frac{\frac{a}{b}}{c}$", "a/b/c"),
])
def test_latex_is_written_out_as_plain_text(tex, plain):
    assert D.plain_text(tex) == plain


def test_report_gives_the_rank_agreement_of_each_proxy_with_the_nll(tmp_path):
    cells = tmp_path / "cells"
    cells.mkdir()
    setup = {"model": "m", "train": {}, "eval_items": 2, "eval_max_length": 8}

    def cell(name, nll, **kw):
        (cells / name).write_text(json.dumps({"setup": setup, "nll": nll, "sums": [nll * 10, nll * 10],
                                              "counts": [10, 10], "trained_pairs": 4, **kw}))

    cell("base.json", 1.5, policy="base")
    # OT rises with the NLL (a proxy pointing the right way); on-target share rises with it too (the wrong way)
    for p, nll, ot, on in (("a", 1.1, 0.60, 0.5), ("b", 1.2, 0.65, 0.7), ("c", 1.3, 0.70, 0.9)):
        cell(D.cell_name(p, 0.1, 0), nll, policy=p, budget=0.1, seed=0, ot=ot, on_target=on,
             style={"answer_words": 10.0, "latex_share": 0.5, "asks_share": 1.0, "digit_share": 0.0})
    D.report(tmp_path, ["a", "b", "c"], [0.1], 1)
    got = json.loads((tmp_path / "results.json").read_text())
    assert got["spearman"] == [{"budget": "0.1", "policies": 3, "ot": 1.0, "on_target": 1.0}]
    md = (tmp_path / "results.md").read_text()
    assert "| 0.1 | 3 | +1.00 | +1.00 |" in md and "| a | 0.1 | 10 | 0.50 | 1.00 | 0.00 |" in md


def test_paired_by_seed_takes_out_what_a_seed_moves_in_every_policy():
    # a seed that raises both policies alike: unpaired the gap is lost in it, paired it is exact
    a = {0: 1.20, 1: 1.30, 2: 1.25}
    b = {0: 1.22, 1: 1.32, 2: 1.27}
    m, lo, hi, n = D.paired_seed_interval(a, b)
    assert n == 3 and m == pytest.approx(-0.02) and hi < 0  # told apart
    assert D.paired_by_seed([{"seed": s, "nll": v} for s, v in a.items()],
                            [{"seed": s, "nll": v} for s, v in b.items()]).endswith("yes")
    # differences of both signs: not told apart; fewer than two common seeds: no interval
    m, lo, hi, _ = D.paired_seed_interval({0: 1.2, 1: 1.3, 2: 1.25}, {0: 1.25, 1: 1.25, 2: 1.26})
    assert lo < 0 < hi
    assert D.paired_seed_interval({0: 1.2, 1: 1.3}, {1: 1.25, 2: 1.0}) is None


def test_form_proxy_prefers_answers_written_like_the_reference():
    import form_proxy as F

    ref = ["She has 3 + 4 = 7 apples left.\n#### 7", "He pays 2 * 5 = 10 dollars.\n#### 10",
           "They walk 6 / 2 = 3 miles each.\n#### 3"]
    raw = ref + ["$\\frac{3}{4}$ of $x$ is $\\boxed{7}$", "\\begin{align} x &= 2 \\end{align}", "A recipe: mix flour."]
    plain = ["Tom has 5 + 2 = 7 pens left.\n#### 7"]
    latex = ["Tom has $5 + 2 = \\boxed{7}$ pens left."]
    assert F.symbol_words("$x$") == " s36 x s36 "
    p, q = F.form_proxies(plain, ref, raw), F.form_proxies(latex, ref, raw)
    assert p["ngram_ratio"] > q["ngram_ratio"] and p["ngram_xent"] < q["ngram_xent"]
    assert F.symbol_words(latex[0]).count("s36") == 2 and "s92" in F.symbol_words(latex[0])
