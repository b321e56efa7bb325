"""``extract.heading_fallback``: the heuristic extractor's fallback where no QA rule fires. The default
(``section``) is today's rule, pair for pair and fingerprint for fingerprint; ``questions`` keeps only headings
that ask something, else a prose paragraph ending with a question and the paragraph after it. On the shared
corpus the QA rules' pairs are the same under both, and the quality rules drop (nearly) nothing of what
``questions`` emits."""

import pytest

from equal.config import ExtractConfig, HygieneConfig
from equal.extract.heuristic import HeuristicExtractor
from equal.extract.registry import make_extractor
from equal.hygiene import apply_hygiene, asks
from equal.types import Document

from conftest import read_corpus

pytestmark = pytest.mark.needs_data


@pytest.fixture(scope="module")
def docs():
    return [Document(i, r["id"], r["text"]) for i, r in enumerate(read_corpus(800))]


def _pairs(extractor, docs):
    return [p.to_record() for e in extractor.extract(docs) for p in e.pairs]


def test_default_fallback_is_todays_rule(docs):
    default = make_extractor(ExtractConfig(drop_rules=[]))  # the extractor itself, without the quality rules
    assert ExtractConfig().heading_fallback == "section"
    assert default.fingerprint() == {"name": "heuristic", "version": 1, "max_pairs": 8, "min_q": 8, "min_a": 2,
                                     "max_a": 4000}
    assert _pairs(default, docs) == _pairs(HeuristicExtractor(), docs)
    with pytest.raises(ValueError, match="heading_fallback"):
        HeuristicExtractor(heading_fallback="nope")


def test_questions_fallback_emits_pairs_that_ask(docs):
    section = _pairs(make_extractor(ExtractConfig(drop_rules=[])), docs)
    questions_ex = make_extractor(ExtractConfig(heading_fallback="questions", drop_rules=[]))
    assert questions_ex.fingerprint()["fallback"] == "questions"
    questions = _pairs(questions_ex, docs)
    qa_rules = {"qa_marker", "problem_solution", "guided_practice", "instructions_solution", "faq_heading"}
    assert [p for p in section if p["rule"] in qa_rules] == [p for p in questions if p["rule"] in qa_rules]
    fallback = [p for p in questions if p["rule"] in ("heading_section", "inline_question")]
    assert fallback and all(asks(p["question"]) for p in fallback)
    assert all(p["question"].rstrip("\"')”’").endswith("?") for p in questions if p["rule"] == "inline_question")
    # the quality rules drop most of the default's fallback pairs and almost none of these
    n_section = sum(p["rule"] == "heading_section" for p in section)
    low_section = apply_hygiene(section, HygieneConfig()).counts["low_quality"]
    low_questions = apply_hygiene(questions, HygieneConfig()).counts["low_quality"]
    assert low_section > n_section / 2 and low_questions <= 0.05 * len(questions)
