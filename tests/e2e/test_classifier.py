"""The ``classifier`` ranking: its rule on a hand-built case, and a replay that picks what a live run picks."""

import numpy as np
import pytest

from equal import run
from equal.experiments.compare import build_context, replay
from equal.experiments.table import extract_all
from equal.io import read_jsonl
from equal.select import recipe
from equal.select.classifier import classifier_scores, negative_rows

from conftest import small_config, write_slice


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _case(seed=0, d=32):
    """Axis 0: a feature every text shares (generic web style); axis 1: the reference's topic. The reference
    has both. Corpus: 240 generic documents (strong axis 0, no topic) and 20 on-topic ones (weak axis 0, some
    topic), in noise. Cosine to the reference's mean favours the generic ones; only a classifier of reference
    against corpus sees that axis 0 tells nothing apart and axis 1 does."""
    rng = np.random.default_rng(seed)
    noise = lambda n, s: s * rng.normal(size=(n, d))  # noqa: E731
    e0, e1 = np.eye(d)[0], np.eye(d)[1]
    ref = _unit(0.7 * e0 + 0.5 * e1 + noise(60, 0.08))
    generic = _unit(0.9 * e0 + noise(240, 0.08))
    topic = _unit(0.15 * e0 + 0.35 * e1 + noise(20, 0.08))
    docs = np.concatenate([generic, topic])
    order = rng.permutation(len(docs))
    return docs[order], ref, np.flatnonzero(order >= 240)


def test_documents_like_the_reference_rank_first_where_cosine_does_not():
    docs, ref, on = _case()
    top = recipe.ranking_order("classifier", len(docs), seed=0, doc_vecs=docs, ref_vecs=ref, n=len(on))
    assert set(top.tolist()) == set(on.tolist())
    # mean cosine (avg-sim) ranks the generic documents first on the same case: the rule is not cosine
    by_cos = recipe.ranking_order("avg-sim", len(docs), seed=0, sim=recipe.similarity_scores(docs, ref), n=len(on))
    assert len(set(by_cos.tolist()) & set(on.tolist())) <= len(on) // 4
    # the seed of a run does not change the ranking (the negative sample is fixed), and the score is cached
    cache = {}
    a = recipe.ranking_order("classifier", len(docs), 0, doc_vecs=docs, ref_vecs=ref, cache=cache)
    b = recipe.ranking_order("classifier", len(docs), 7, doc_vecs=docs, ref_vecs=ref, cache=cache)
    assert np.array_equal(a, b) and "classifier" in cache
    # the same score is the ``classifier`` similarity kind (the tracking prior's covariate)
    sims = recipe.Similarities(docs, ref, k=10)
    assert np.array_equal(sims("classifier"), classifier_scores(docs, ref))
    assert np.array_equal(np.argsort(-sims("classifier"), kind="stable"), a)


def test_negatives_are_a_fixed_sample_of_the_corpus():
    n = negative_rows(10_000, 1000)
    assert len(n) == 2000 and len(set(n.tolist())) == 2000 and n.max() < 10_000
    assert np.array_equal(n, negative_rows(10_000, 1000))
    assert np.array_equal(negative_rows(300, 50), np.arange(300))  # a small corpus: every document


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [{"policy": "classifier"},
                                       {"policy": "equal", "bandit.prior_similarity": "classifier"}])
def test_a_replay_picks_exactly_what_a_live_run_picks(tmp_path_factory, overrides):
    d = tmp_path_factory.mktemp("clf")
    p = write_slice(d / "small.jsonl", 300)
    cfg = small_config(d, p, budget=0.15).replace(**overrides)
    table = extract_all(cfg, d / "table", progress=False, say=lambda m: None)
    ctx, _ = build_context(cfg, table, d / "cmp", eval_size=200, progress=False)
    live = cfg.replace(reference=str(d / "cmp" / "reference_run.jsonl"), out=str(d / "live"))
    run(live, progress=False)
    rep = replay(cfg, ctx)
    live_ids = [e["doc_id"] for e in read_jsonl(d / "live" / "extracted.jsonl")]
    assert len(live_ids) == round(0.15 * 300)
    assert [ctx.table.doc_ids[int(r)] for r in rep.rows] == live_ids
    live_rounds = [(r["round"], r["cluster"], r["doc_ids"]) for r in read_jsonl(d / "live" / "rounds.jsonl")]
    assert [(a, b, [ctx.table.doc_ids[int(x)] for x in rows]) for a, b, rows in rep.rounds] == live_rounds
    if overrides["policy"] == "classifier":  # the ranking is the classifier's order, not avg-sim's
        clf = recipe.ranking_order("classifier", ctx.n, 0, doc_vecs=ctx.base, ref_vecs=ctx.prior_vecs,
                                   n=len(live_ids))
        assert [ctx.table.doc_ids[int(ctx.rows_to_table[r])] for r in clf] == live_ids
