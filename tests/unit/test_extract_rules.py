"""extract.drop_rules: hygiene's quality rules applied right after extraction, before pairs are embedded."""

import pytest

from equal.config import DROP_RULES, Config, ConfigError, ExtractConfig, result_fields_changed
from equal.extract.registry import make_extractor
from equal.extract.rules import RuleFilteredExtractor, filter_extraction, kept_mask
from equal.types import Document, Extraction, QAPair

RULES = ["heading_question", "heading_answer", "link_answer", "short"]
GOOD = QAPair("What is the sum of 3 and 4?", "The sum of 3 and 4 is 7.")
HEADING = QAPair("Practice Problems", "## Exercises")


class Fixed:
    """An extractor that returns given pairs per document (the filter is what is under test)."""

    name = "fixed"

    def __init__(self, by_doc):
        self.by_doc = by_doc

    def extract(self, docs):
        return [Extraction(pairs=list(self.by_doc[d.id]), status="ok" if self.by_doc[d.id] else "empty")
                for d in docs]

    def fingerprint(self):
        return {"name": "fixed"}

    def stats(self):
        return {"calls": 1}

    def close(self):
        pass


def test_pairs_that_break_a_rule_are_dropped_and_a_document_left_with_none_is_empty():
    ex = RuleFilteredExtractor(Fixed({"a": [HEADING, GOOD], "b": [HEADING], "c": []}), RULES)
    out = ex.extract([Document(i, d, "text") for i, d in enumerate("abc")])
    assert [[p.question for p in r.pairs] for r in out] == [[GOOD.question], [], []]
    assert [r.status for r in out] == ["ok", "empty", "empty"]
    assert ex.stats()["rule_dropped"] == 2 and ex.stats()["calls"] == 1
    assert ex.fingerprint() == {"name": "fixed", "drop_rules": RULES}
    assert kept_mask([(HEADING.question, HEADING.answer), (GOOD.question, GOOD.answer)], RULES).tolist() == \
        [False, True]
    assert kept_mask([(HEADING.question, HEADING.answer)], []).tolist() == [True]


def test_a_failed_document_stays_failed_and_an_untouched_one_is_returned_as_is():
    failed = Extraction(pairs=[], status="failed", reason="timeout")
    assert filter_extraction(failed, RULES)[0] is failed
    ok = Extraction(pairs=[GOOD])
    assert filter_extraction(ok, RULES) == (ok, {})


def test_the_registry_wraps_only_when_rules_are_set():
    plain = make_extractor(ExtractConfig(drop_rules=[]))
    assert not isinstance(plain, RuleFilteredExtractor) and "drop_rules" not in plain.fingerprint()
    default = make_extractor(ExtractConfig())  # hygiene's four rules by default
    assert isinstance(default, RuleFilteredExtractor) and default.fingerprint()["drop_rules"] == list(DROP_RULES)
    ruled = make_extractor(ExtractConfig(drop_rules=["short"]))
    assert isinstance(ruled, RuleFilteredExtractor) and ruled.fingerprint()["drop_rules"] == ["short"]
    assert ruled.fingerprint()["name"] == "heuristic" and ruled.name == "heuristic"


def test_an_unknown_rule_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="extract.drop_rules"):
        Config(corpus="c", reference="r", out=str(tmp_path)).replace(**{"extract.drop_rules": ["headings"]})


def test_a_run_made_before_a_field_existed_resumes_under_what_runs_did_then(tmp_path):
    new = Config(corpus="c", reference="r", out=str(tmp_path)).to_dict()
    old = {k: (dict(v) if isinstance(v, dict) else v) for k, v in new.items()}
    del old["extract"]["max_answer_chars"]  # a field whose default never changed counts as its default
    assert result_fields_changed(old, new) == []
    del old["extract"]["drop_rules"]  # a config written before extract.drop_rules: that run kept every pair
    assert result_fields_changed(old, new) == ["extract.drop_rules"]  # today's default has the rules on
    plain = Config(corpus="c", reference="r", out=str(tmp_path)).replace(**{"extract.drop_rules": []})
    assert result_fields_changed(old, plain.to_dict()) == []
