"""Dataset hygiene: planted duplicates and near duplicates are removed and distinct pairs kept; planted GSM8K
items are removed by decontamination and nothing else on real pairs (the heuristic extractor over a slice of
the shared corpus, decontaminated against GSM8K items from the shared reference)."""

import json
import random
import re

import pytest

from equal.cli import build_parser
from equal.cli.flags import load_config as _load_config
from equal.config import Config, HygieneConfig
from equal.hygiene import EvalIndex, HygieneError, apply_hygiene, run_hygiene

from conftest import REF_MATH, read_corpus, write_jsonl


@pytest.fixture(scope="module")
def real_pairs():
    """Pairs the heuristic extractor finds in the first 1,500 documents of the shared corpus."""
    from equal.config import ExtractConfig
    from equal.extract.registry import make_extractor
    from equal.types import Document

    docs = [Document(i, r["id"], r["text"]) for i, r in enumerate(read_corpus(1500))]
    # every pair the extractor finds (extract.drop_rules off): hygiene is what is tested here
    pairs = [p.to_record() for e in make_extractor(ExtractConfig(drop_rules=[])).extract(docs) for p in e.pairs]
    assert len(pairs) > 1000
    return pairs


@pytest.fixture(scope="module")
def gsm8k(tmp_path_factory):
    """1,000 GSM8K items (question/answer) as an evaluation set file, and the items."""
    with open(REF_MATH, encoding="utf-8") as f:
        items = [json.loads(line) for _, line in zip(range(1000), f)]
    path = write_jsonl(tmp_path_factory.mktemp("eval") / "gsm8k_eval.jsonl", items)
    return path, items


def _words(text):
    return re.findall(r"\w+", text.lower())


def _edit_one_word(text, rng):
    """``text`` with one word (not the first or last) replaced."""
    toks = text.split(" ")
    i = rng.randrange(1, max(2, len(toks) - 1))
    toks[i] = "zebra"
    return " ".join(toks)


def test_planted_duplicates_and_near_duplicates_are_removed_and_distinct_pairs_kept(real_pairs):
    cfg = HygieneConfig()
    base = apply_hygiene(real_pairs, cfg)
    base_dropped = {d["index"] for d in base.dropped}
    rng = random.Random(0)
    kept = [i for i in base.keep if len(_words(real_pairs[i]["answer"])) >= 40][:300]
    pairs = list(real_pairs)
    planted_exact, planted_near, planted_distinct = [], [], []
    for i in rng.sample(kept, 30):  # exact: other case, spacing and punctuation
        p = real_pairs[i]
        pairs.append({**p, "question": "  " + p["question"].upper() + " ?", "answer": p["answer"].replace(" ", "  ")})
        planted_exact.append((len(pairs) - 1, i))
    for i in rng.sample(kept, 30):  # near: one word of a long answer changed
        p = real_pairs[i]
        pairs.append({**p, "answer": _edit_one_word(p["answer"], rng)})
        planted_near.append((len(pairs) - 1, i))
    short_q = [i for i in kept if len(_words(real_pairs[i]["question"])) <= 15]
    for i in rng.sample(short_q, 30):  # related but distinct: the same question, half of its answer replaced
        j = rng.choice([j for j in kept if real_pairs[j]["answer"] != real_pairs[i]["answer"]])
        a_i, a_j = _words(real_pairs[i]["answer"]), _words(real_pairs[j]["answer"])
        pairs.append({**real_pairs[i], "answer": " ".join(a_j[: len(a_i) // 2] + a_i[len(a_i) // 2:])})
        planted_distinct.append(len(pairs) - 1)
    res = apply_hygiene(pairs, cfg)
    by_index = {d["index"]: d for d in res.dropped}
    assert set(by_index) == base_dropped | {n for n, _ in planted_exact + planted_near}
    for new, orig in planted_exact:
        assert by_index[new]["reason"] == "exact_duplicate" and by_index[new]["duplicate_of"] == orig
    for new, orig in planted_near:
        assert by_index[new]["reason"] == "near_duplicate" and by_index[new]["duplicate_of"] == orig
        assert cfg.near_threshold <= by_index[new]["jaccard"] < 1
    assert not set(planted_distinct) & set(by_index)
    assert res.counts["kept"] == len(pairs) - len(by_index) == len(res.keep)
    assert res.counts["exact_duplicate"] + res.counts["near_duplicate"] + res.counts["low_quality"] == len(by_index)
    # dedup off: nothing dropped; near dedup off: only exact ones
    assert apply_hygiene(pairs, HygieneConfig(enabled=False)).dropped == []
    exact_only = apply_hygiene(pairs, HygieneConfig(near_dedup=False, drop_rules=[]))
    assert {d["reason"] for d in exact_only.dropped} == {"exact_duplicate"}
    assert {n for n, _ in planted_exact} <= {d["index"] for d in exact_only.dropped}


def test_planted_gsm8k_items_are_removed_by_decontamination_and_nothing_else(real_pairs, gsm8k, tmp_path):
    path, items = gsm8k
    rng = random.Random(1)
    pairs = list(real_pairs)
    planted = set()
    for k, item in enumerate(rng.sample(items, 40)):
        q, a = item["question"], item["answer"]
        if k % 3 == 0:  # the question inside a longer prompt, other case
            pairs.append({"question": "Solve this problem step by step. " + q.upper(), "answer": "42", "doc_id": "x"})
        elif k % 3 == 1:  # the answer's worked solution with a new question
            pairs.append({"question": "How much is it?", "answer": a, "doc_id": "x"})
        else:  # exactly 13 consecutive words of the question, different punctuation
            w = _words(q)
            assert len(w) >= 13
            pairs.append({"question": "Consider: " + ", ".join(w[:13]) + "!", "answer": "-", "doc_id": "x"})
        planted.add(len(pairs) - 1)
    near_miss = []
    for item in rng.sample(items, 20):  # 12 words of an item: below the n-gram length, kept
        w = _words(item["question"])
        pairs.append({"question": " ".join(w[:12]) + " please", "answer": "zebra " + " ".join(w[13:25]), "doc_id": "y"})
        near_miss.append(len(pairs) - 1)
    # decontamination alone (the quality rules are tested below)
    res = apply_hygiene(pairs, HygieneConfig(dedup=False, near_dedup=False, decontaminate=[str(path)], drop_rules=[]))
    dropped = {d["index"]: d for d in res.dropped}
    assert set(dropped) == planted  # every planted item, and no real pair of the slice, no near miss
    assert all(d["reason"] == "contaminated" and d["eval_file"] == path.name for d in dropped.values())
    for i, d in dropped.items():  # the reported n-gram is really in the pair and in the named evaluation item
        item = items[d["eval_line"] - 1]
        assert " ".join(_words(pairs[i][d["field"]])).find(d["ngram"]) >= 0
        assert d["ngram"] in " ".join(_words(item["question"])) or d["ngram"] in " ".join(_words(item["answer"]))
    assert res.counts["decontaminate"]["items"] == [len(items)]
    # a shorter n-gram length catches the 12-word near misses too
    res12 = apply_hygiene(pairs, HygieneConfig(dedup=False, near_dedup=False, decontaminate=[str(path)], ngram=12,
                                               drop_rules=[]))
    assert set(near_miss) <= {d["index"] for d in res12.dropped}


QUALITY_PLANTED = [  # (question, answer, the rule that drops it)
    ("Practice Problems", "Work through each of the following exercises.", "heading_question"),
    ("\\exercisesheader{}", "Compute the sum of the first ten odd numbers.", "heading_question"),
    ("Exercise 3.2", "Show that the product of two odd numbers is odd.", "heading_question"),
    ("Introduction to Linear Algebra", "Vectors, matrices and the maps between them.", "heading_question"),
    ("\\section{Limits and Continuity}", "A function is continuous where its limit equals its value.",
     "heading_question"),
    ("What is covered in this chapter?", "## Chapter 4: Integration\n\n### 4.1 Riemann sums", "heading_answer"),
    ("Where can I read more about monads?", "- [Monads](https://example.org/monads)\n- https://example.org/faq",
     "link_answer"),
    ("While he was thus employed a farming man came into the barn.", "Jack instantly started to his feet.",
     "heading_question"),
    ("Why?", "Because the derivative is positive everywhere.", "short"),
    ("What is the answer to the problem?", "$$", "short"),
]
QUALITY_KEPT = [  # questions, problems and instructions in their usual forms
    ("What is the derivative of $x^2$?", "$2x$."),
    ("Find the derivative of $\\sin x$.", "$\\cos x$."),
    ("Solve $x^2 - 5x + 6 = 0$", "$x = 2$ or $x = 3$."),
    ("Write a function that reverses a string", "```python\ndef rev(s):\n    return s[::-1]\n```"),
    ("A train leaves at 3 pm at 60 miles per hour and a second one an hour later at 80.  Find when they meet.",
     "At 7 pm."),
    ("If $12^2 \\cdot 18^3 = 2^x \\cdot 3^y$, find $x+y$.", "$x + y = 4 + 8 = 12$."),
    ("In triangle $ABC,$\n\\[(b \\sin C)(b \\cos C + c \\cos B) = 42.\\]Compute the area of triangle $ABC.$", "21"),
    ("How many positive divisors does 36 have?", "9"),
    ("HOW MANY POSITIVE DIVISORS DOES 48 HAVE ?", "10"),
    ("Let $f(x) = x^3$. Show that $f$ is increasing", "For $x < y$, $y^3 - x^3 > 0$."),
    ("Explain what a hash map is", "A table from keys to values with constant-time lookups; see "
     "[the docs](https://docs.python.org/3/library/stdtypes.html#dict)."),
]


def test_quality_rules_drop_headings_macros_labels_link_lists_and_short_pairs(real_pairs):
    from equal.hygiene import quality_reason

    cfg = HygieneConfig()
    for q, a, rule in QUALITY_PLANTED:
        assert quality_reason(q, a, cfg) == rule, (q, a)
    for q, a in QUALITY_KEPT:
        assert quality_reason(q, a, cfg) is None, (q, a)
    pairs = [{"question": q, "answer": a, "doc_id": str(i)} for i, (q, a, _) in enumerate(QUALITY_PLANTED)]
    pairs += [{"question": q, "answer": a, "doc_id": f"k{i}"} for i, (q, a) in enumerate(QUALITY_KEPT)]
    res = apply_hygiene(pairs, cfg)
    assert [(d["index"], d["reason"]) for d in res.dropped] == [(i, r) for i, (_, _, r) in enumerate(QUALITY_PLANTED)]
    assert res.counts["low_quality"] == len(QUALITY_PLANTED) == res.counts["pairs"] - res.counts["kept"]
    assert res.counts["heading_question"] == 6 and res.counts["short"] == 2
    # each rule can be turned off, and the floors moved
    only_links = apply_hygiene(pairs, HygieneConfig(drop_rules=["link_answer"]))
    assert [d["reason"] for d in only_links.dropped] == ["link_answer"]
    assert apply_hygiene(pairs, HygieneConfig(drop_rules=[])).dropped == []
    assert quality_reason("Why?", "Because.", HygieneConfig(min_question_words=1)) is None
    with pytest.raises(Exception, match="drop_rules"):
        Config().replace(**{"hygiene.drop_rules": ["no_such_rule"]}).validate()
    # on real pairs: every heading_question drop holds no '?', and pairs with one are never dropped as such
    real = apply_hygiene(real_pairs, HygieneConfig(dedup=False, near_dedup=False))
    heading = [d["index"] for d in real.dropped if d["reason"] == "heading_question"]
    assert heading and all("?" not in real_pairs[i]["question"] for i in heading)
    assert 0 < real.counts["low_quality"] < len(real_pairs)


def test_evaluation_set_formats_and_errors(tmp_path):
    ok = write_jsonl(tmp_path / "he.jsonl", [{"prompt": "def add(a, b): return the sum of the two numbers a and b "
                                                        "as an integer please", "output": "return a + b"}])
    idx = EvalIndex.build([ok], 13)
    assert idx.items == [1] and len(idx.grams) == 6 and idx.too_short == 1  # 18 words: 6 n-grams; output short
    (tmp_path / "bad.jsonl").write_text('{"question": "a"}\nnot json\n')
    with pytest.raises(HygieneError, match="line 2"):
        EvalIndex.build([tmp_path / "bad.jsonl"], 13)
    with pytest.raises(HygieneError, match="not found"):
        EvalIndex.build([tmp_path / "missing.jsonl"], 13)
    (tmp_path / "nofield.jsonl").write_text('{"id": 3}\n')
    with pytest.raises(HygieneError, match="no text field"):
        EvalIndex.build([tmp_path / "nofield.jsonl"], 13)


def test_run_hygiene_writes_a_drop_report_and_leaves_the_journal_whole(tmp_path):
    pairs = [{"question": "What is a prime number exactly?", "answer": "A number with exactly two divisors.", "doc_id": "a"},
             {"question": "what is a PRIME number, exactly", "answer": "a number with exactly two divisors", "doc_id": "b"},
             {"question": "What is a monad?", "answer": "A monoid in the category of endofunctors.", "doc_id": "c"}]
    write_jsonl(tmp_path / "dataset.jsonl", pairs)
    before = (tmp_path / "dataset.jsonl").read_bytes()
    _, res = run_hygiene(tmp_path, HygieneConfig())
    assert (tmp_path / "dataset.jsonl").read_bytes() == before
    report = [json.loads(line) for line in (tmp_path / "hygiene_dropped.jsonl").read_text().splitlines()]
    assert report == [{"line": 2, "reason": "exact_duplicate", "duplicate_of_line": 1, "question": pairs[1]["question"],
                       "answer": pairs[1]["answer"], "doc_id": "b"}]
    assert res.counts["kept"] == 2 and res.counts["report"] == "hygiene_dropped.jsonl"


def test_decontaminate_flag_of_equal_run_adds_to_the_config(tmp_path):
    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text("hygiene:\n  decontaminate: [a.jsonl]\n")
    args = build_parser().parse_args(["run", "--config", str(yaml_path), "--decontaminate", "b.jsonl",
                                      "--decontaminate", "c.jsonl"])
    assert _load_config(args).hygiene.decontaminate == ["a.jsonl", "b.jsonl", "c.jsonl"]
    # hygiene never changes what a run produces: a resume may change it
    from equal.config import result_fields_changed

    assert result_fields_changed(Config().to_dict(), _load_config(args).to_dict()) == []


def test_equal_run_with_a_missing_evaluation_set_fails_at_once(tmp_path):
    from conftest import equal_cli

    r = equal_cli("run", "--corpus", tmp_path / "c.jsonl", "--reference", tmp_path / "r.jsonl", "--out",
                  tmp_path / "run", "--decontaminate", tmp_path / "nope.jsonl", timeout=120)
    assert r.returncode == 2
    assert "nope.jsonl" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()
