"""Parsing and validating what an LLM answers (no server needed)."""

from __future__ import annotations

import json

import pytest

from equal.config import ExtractConfig
from equal.extract.base import cut_text
from equal.extract.openai.parse import PAIRS_SCHEMA, parse_pairs, validate_pairs
from equal.extract.openai.prompt import render

P1 = {"question": "What is the capital of Mongolia?", "answer": "Ulaanbaatar."}
P2 = {"question": "When did Genghis Khan die?", "answer": "In 1227."}


@pytest.mark.parametrize("content", [
    json.dumps({"pairs": [P1, P2]}),
    json.dumps([P1, P2]),
    "```json\n" + json.dumps({"pairs": [P1, P2]}, indent=2) + "\n```",
    "Here you go:\n```\n" + json.dumps([P1, P2]) + "\n```\nAnything else?",
    "Sure! " + json.dumps({"pairs": [P1, P2]}) + "\nHope this helps {:)}",
    "<think>The user wants pairs [like this].</think>\n" + json.dumps({"pairs": [P1, P2]}),
    json.dumps({"qa_pairs": [P1, P2], "note": "two"}),
    json.dumps({"result": {"pairs": [P1, P2]}}),
    json.dumps({"pairs": [P1, P2]})[:-2] + ", {\"question\": \"Why",  # cut off by the token limit
])
def test_parse_pairs_finds_the_list(content):
    items = parse_pairs(content)
    assert items is not None
    assert [(i["question"], i["answer"]) for i in items[:2]] == [(P1["question"], P1["answer"]),
                                                                 (P2["question"], P2["answer"])]


def test_parse_single_object_and_empty_list():
    assert parse_pairs(json.dumps(P1)) == [P1]
    assert parse_pairs('{"pairs": []}') == []
    assert parse_pairs("[]") == []


@pytest.mark.parametrize("content", ["", "   ", "I cannot help with that.", '{"pairs": [{"question": "What',
                                     '"just a string"', "42", '{"answer_count": 3}'])
def test_parse_invalid(content):
    assert parse_pairs(content) is None


def cfg(**kw):
    return ExtractConfig(name="openai", **kw)


def test_validate_bounds_duplicates_and_limit():
    doc = "Mongolia's capital is Ulaanbaatar. Genghis Khan died in 1227."
    items = [
        P1, P2,
        {"question": "What is the capital of Mongolia?", "answer": "Ulan Bator"},  # duplicate question
        {"question": "Why?", "answer": "Because."},  # question too short (8)
        {"question": "What year is it in the text?", "answer": ""},  # empty answer
        {"question": "   ", "answer": "x"},
        {"question": 3, "answer": "three"},
        {"answer": "no question"},
        "not an object",
        {"question": doc, "answer": "everything"},  # the whole document as the question
        {"Question": "How long did the Mongol Empire last?", "Answer": 150},  # other key case, number answer
        {"question": "What came after the Yuan Dynasty?", "answer": "x" * 50},
    ]
    v = validate_pairs(items, doc, cfg(max_pairs_per_doc=3, min_question_chars=8, max_answer_chars=30))
    assert v.pairs == [(P1["question"], P1["answer"]), (P2["question"], P2["answer"]),
                       ("How long did the Mongol Empire last?", "150")]
    assert dict(v.rejections) == {"duplicate": 1, "question_too_short": 1, "empty_answer": 1, "empty_question": 1,
                                  "not_a_string": 1, "missing_field": 1, "not_an_object": 1,
                                  "question_is_document": 1, "over_max_pairs": 1}


def test_long_answers_are_cut_at_a_boundary():
    long = "First paragraph is here.\n\nSecond paragraph goes on and on. " + "More words follow. " * 20
    v = validate_pairs([{"question": "What does it say at length?", "answer": long}], "doc", cfg(max_answer_chars=80))
    assert v.answers_truncated == 1
    (q, a), = v.pairs
    assert len(a) <= 80 and long.startswith(a) and a.endswith(".")
    assert cut_text("short", 80) == "short"


def test_render_replaces_placeholders_once():
    t = 'Give {max_pairs} pairs as {"pairs": [...]}\n<document>\n{document}\n</document>'
    out = render(t, document="A text mentioning {max_pairs} and {pairs} literally.", max_pairs="4")
    assert out == ('Give 4 pairs as {"pairs": [...]}\n<document>\n'
                   "A text mentioning {max_pairs} and {pairs} literally.\n</document>")


def test_schema_is_an_object_of_pairs():
    assert PAIRS_SCHEMA["type"] == "object" and PAIRS_SCHEMA["required"] == ["pairs"]
    item = PAIRS_SCHEMA["properties"]["pairs"]["items"]
    assert item["required"] == ["question", "answer"] and item["additionalProperties"] is False
