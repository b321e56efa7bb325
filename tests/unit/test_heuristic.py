import re

import pytest

from equal.extract.heuristic import HeuristicExtractor
from equal.types import Document

pytestmark = pytest.mark.needs_data  # every test reads the shared corpus (see conftest.py)


def _norm(s):
    return " ".join(s.split())


@pytest.fixture(scope="module")
def ex():
    return HeuristicExtractor()


def _docs(corpus_records, pattern, n=30):
    rx = re.compile(pattern, re.M)
    return [r for r in corpus_records if rx.search(r["text"])][:n]


def test_competition_problems_give_problem_solution_pairs(ex, corpus_records):
    docs = _docs(corpus_records, r"^Problem \([^)]*\):\s*$")
    assert len(docs) >= 20
    for r in docs:
        pairs = ex.extract_text(r["text"])
        ps = [p for p in pairs if p.rule == "problem_solution"]
        assert len(ps) == 1, r["id"]
        problem = r["text"].split("Solution:")[0].split(":", 1)[1]
        assert _norm(ps[0].question) == _norm(problem)
        assert _norm(ps[0].answer) in _norm(r["text"].split("Solution:", 1)[1])


def test_textbook_examples_with_solutions(ex, corpus_records):
    docs = _docs(corpus_records, r"^(Example|Exercise)\.\s*$[\s\S]*^Solution\.\s*$")
    assert len(docs) >= 20
    hits = 0
    for r in docs:
        for p in ex.extract_text(r["text"]):
            if p.rule == "problem_solution":
                hits += 1
                assert "Solution." not in p.question
                assert _norm(p.question) in _norm(r["text"]) and _norm(p.answer)[:200] in _norm(r["text"])
    assert hits >= len(docs)


def test_exercises_pair_instructions_with_example_solution(ex, corpus_records):
    docs = _docs(corpus_records, r"^# Instructions\s*$[\s\S]*^## Example solution\s*$")
    assert len(docs) >= 20
    for r in docs:
        ps = [p for p in ex.extract_text(r["text"]) if p.rule == "instructions_solution"]
        assert len(ps) == 1
        assert ps[0].answer.startswith("```")
        assert "Example solution" not in ps[0].question


def test_faq_style_question_headings_and_qa_markers(ex, corpus_records):
    no_code = [r for r in corpus_records if "```" not in r["text"] and "~~~" not in r["text"]]
    q_heading = _docs(no_code, r"^#+ [^\n]*\?\s*$")
    assert q_heading
    for r in q_heading:
        ps = [p for p in ex.extract_text(r["text"]) if p.rule == "faq_heading"]
        assert ps and all(p.question.endswith("?") for p in ps)
    synthetic = "Intro line.\n\nQ: How do I open a file in Python?\nA: Use the built-in open() function.\n\n" \
                "Q: What does 'with' do?\nA: It closes the file for you.\n"
    ps = ex.extract_text(synthetic)
    assert [(p.question, p.answer, p.rule) for p in ps] == [
        ("How do I open a file in Python?", "Use the built-in open() function.", "qa_marker"),
        ("What does 'with' do?", "It closes the file for you.", "qa_marker"),
    ]


def test_heading_section_fallback(ex, corpus_records):
    factbook = [r for r in corpus_records if r["id"].startswith("factbook")][:10]
    for r in factbook:
        ps = ex.extract_text(r["text"])
        assert ps and all(p.rule == "heading_section" for p in ps)
        headings = {l.lstrip("#").strip() for l in r["text"].splitlines() if l.startswith("#")}
        assert all(p.question in headings for p in ps)
    # no heading markup: first line is the heading
    ps = ex.extract_text("The river rose in the night\nand by morning the lower town was under water.")
    assert [(p.question, p.rule) for p in ps] == [("The river rose in the night", "heading_section")]
    assert ex.extract_text("   ") == []


def test_every_pair_comes_from_its_document(ex, corpus_records):
    docs = [Document(i, r["id"], r["text"]) for i, r in enumerate(corpus_records[:300])]
    results = ex.extract(docs)
    assert len(results) == len(docs)
    n = 0
    for d, res in zip(docs, results):
        assert len(res.pairs) <= ex.max_pairs
        for p in res.pairs:
            n += 1
            assert p.doc_id == d.id and p.extractor == "heuristic" and p.rule
            assert _norm(p.question)[:100] in _norm(d.text)
            assert _norm(p.answer)[:100] in _norm(d.text)
    assert n > len(docs)
