"""Extension points, as docs/extending.md shows them: a policy and an extractor registered from this test
module run live (``equal.run``) and in replay (``equal.experiments.compare.replay``), and pick the same
documents both ways."""

from __future__ import annotations

import numpy as np
import pytest

from equal import run
from equal.errors import UserError
from equal.experiments.compare import build_context, replay
from equal.experiments.table import extract_all
from equal.extract.registry import make_extractor, register_extractor, unregister_extractor
from equal.io import read_jsonl
from equal.select.policies import ArmStats
from equal.select.registry import register_policy, strategies, unregister_policy
from equal.types import Extraction, QAPair

from conftest import small_config

pytestmark = [pytest.mark.slow, pytest.mark.needs_data]


class FewestPulls(ArmStats):
    """A bandit of this test's own: the arm pulled least so far, ties broken by the best mean."""

    calls = 0

    @classmethod
    def from_config(cls, k, bandit):  # noqa: ARG003
        return cls(k)

    def scores(self) -> np.ndarray:
        FewestPulls.calls += 1
        m = np.nan_to_num(self.means(), nan=0.0)
        return -self.counts().astype(np.float64) + 1e-3 * m


class FirstParagraph:
    """An extractor of this test's own: one pair per document, its first paragraph as the answer."""

    name = "first-paragraph"

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.calls = 0

    def extract(self, docs):
        self.calls += len(docs)
        out = []
        for d in docs:
            para = d.text.strip().split("\n\n")[0][: self.limit].strip()
            if len(para) < 20:
                out.append(Extraction(pairs=[], status="empty"))
                continue
            words = para.split()
            out.append(Extraction(pairs=[QAPair(f"What does the passage beginning '{' '.join(words[:6])}' say?",
                                                para, doc_id=d.id, extractor=self.name)]))
        return out

    def fingerprint(self) -> dict:
        return {"name": self.name, "limit": self.limit}

    def stats(self) -> dict:
        return {"docs": self.calls}

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def registered():
    register_policy("test-fewest-pulls")(FewestPulls)
    register_extractor("first-paragraph")(lambda cfg: FirstParagraph(cfg.max_answer_chars // 4))
    yield
    unregister_policy("test-fewest-pulls")
    unregister_extractor("first-paragraph")


@pytest.fixture(scope="module")
def corpus300(slice_path, tmp_path_factory):
    d = tmp_path_factory.mktemp("extending")
    p = d / "c300.jsonl"
    with open(slice_path) as src, open(p, "w") as dst:
        for _, line in zip(range(300), src):
            dst.write(line)
    return d, p


def _live_and_replay(cfg, table_dir, tmp_path):
    ctx, _ = build_context(cfg, table_dir, tmp_path / "cmp", eval_size=200, progress=False)
    live = cfg.replace(reference=str(tmp_path / "cmp" / "reference_run.jsonl"), out=str(tmp_path / "live"))
    run(live, progress=False)
    rep = replay(cfg, ctx)
    live_ids = [e["doc_id"] for e in read_jsonl(tmp_path / "live" / "extracted.jsonl")]
    live_rounds = [(r["round"], r["cluster"], r["doc_ids"]) for r in read_jsonl(tmp_path / "live" / "rounds.jsonl")]
    rep_rounds = [(a, b, [ctx.table.doc_ids[int(x)] for x in rows]) for a, b, rows in rep.rounds]
    return live_ids, [ctx.table.doc_ids[int(r)] for r in rep.rows], live_rounds, rep_rounds


def test_a_registered_policy_runs_live_and_in_replay_alike(registered, corpus300, tmp_path):
    d, p = corpus300
    assert "test-fewest-pulls" in strategies()
    cfg = small_config(d, p, budget=0.2, policy="test-fewest-pulls")
    table = extract_all(cfg, d / "table-heuristic", progress=False, say=lambda m: None)
    FewestPulls.calls = 0
    live_ids, rep_ids, live_rounds, rep_rounds = _live_and_replay(cfg, table, tmp_path)
    assert FewestPulls.calls > 0  # the registered class chose the arms
    assert rep_ids == live_ids and rep_rounds == live_rounds and len(live_rounds) >= 3
    # it really is its own rule: no arm is pulled twice before every available arm was pulled once
    arms = [c for _, c, _ in live_rounds]
    first = arms[: len(set(arms))]
    assert len(set(first)) == len(first)


def test_a_registered_extractor_runs_live_in_a_table_and_in_replay_alike(registered, corpus300, tmp_path):
    d, p = corpus300
    cfg = small_config(d, p, budget=0.2, **{"extract.name": "first-paragraph"})
    table = extract_all(cfg, d / "table-first-paragraph", progress=False, say=lambda m: None)
    live_ids, rep_ids, live_rounds, rep_rounds = _live_and_replay(cfg, table, tmp_path)
    assert rep_ids == live_ids and rep_rounds == live_rounds
    recs = list(read_jsonl(tmp_path / "live" / "dataset.jsonl"))
    assert recs and {r["extractor"] for r in recs} == {"first-paragraph"}
    assert all(r["question"].startswith("What does the passage beginning") for r in recs)


def test_an_unknown_extractor_is_a_user_error(registered):
    from equal.config import ExtractConfig

    with pytest.raises(UserError, match="first-paragraph"):  # the message lists what is registered
        make_extractor(ExtractConfig(name="no-such-extractor"))
