"""Extraction table, replay and `equal compare` on a slice of the shared corpus."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from equal import run
from equal.experiments.compare import build_context, replay
from equal.experiments.table import ExtractionTable, TableError, extract_all
from equal.extract.rules import kept_mask
from equal.io import read_jsonl

from conftest import REF_CODE, small_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small(slice_path, tmp_path_factory):
    d = tmp_path_factory.mktemp("replay")
    p = d / "small.jsonl"
    with open(slice_path) as src, open(p, "w") as dst:
        for _, line in zip(range(400), src):
            dst.write(line)
    cfg = small_config(d, p, budget=0.15)
    table = extract_all(cfg, d / "table", progress=False, say=lambda m: None)
    return d, p, cfg, table


def test_table_holds_every_document_with_vectors(small):
    d, p, cfg, table_dir = small
    t = ExtractionTable.load(table_dir)
    ids = [json.loads(line)["id"] for line in open(p)]
    assert t.doc_ids == ids
    assert len(t.vectors) == int(t.n_pairs.sum()) > 100
    assert np.allclose(np.linalg.norm(np.asarray(t.vectors), axis=1), 1.0, atol=1e-4)
    assert {s for s in t.status} <= {"ok", "empty", "failed"}
    # the table keeps every pair, also under the default extract.drop_rules: replays mask them
    assert cfg.extract.drop_rules and "drop_rules" not in t.meta["key"]["extractor"]
    kept = kept_mask(t.all_pairs(), cfg.extract.drop_rules)
    assert len(kept) == len(t.vectors) and 0 < kept.sum() < len(kept)
    assert all((n > 0) == (s == "ok") for n, s in zip(t.n_pairs, t.status))
    # a second call finds it complete and changes nothing
    before = (table_dir / "docs.jsonl").read_bytes()
    extract_all(cfg, table_dir, progress=False, say=lambda m: None)
    assert (table_dir / "docs.jsonl").read_bytes() == before
    # another extractor setting is refused, not mixed in
    with pytest.raises(TableError):
        extract_all(cfg.replace(**{"extract.max_pairs_per_doc": 2}), table_dir, progress=False, say=lambda m: None)


@pytest.mark.parametrize("overrides", [{}, {"policy": "thompson", "bandit.reward": "marginal"},
                                       {"policy": "avg-sim"},
                                       # the default has quality rules at extraction (the live extractor
                                       # drops pairs, the replay masks the same ones in the unfiltered
                                       # table); the paper keeps every pair
                                       {"extract.drop_rules": []},
                                       # the shipped warm-up (small_config's is a random half of the budget)
                                       {"align.warmup_fraction": 0.25, "align.warmup_sampling": "targeted"}])
def test_a_replay_picks_exactly_what_a_live_run_picks(small, overrides, tmp_path):
    d, p, cfg, table_dir = small
    cfg = cfg.replace(**overrides)
    ctx, _ = build_context(cfg, table_dir, tmp_path / "cmp", eval_size=200, progress=False)
    live = cfg.replace(reference=str(tmp_path / "cmp" / "reference_run.jsonl"), out=str(tmp_path / "live"))
    run(live, progress=False)
    rep = replay(cfg, ctx)
    live_ids = [e["doc_id"] for e in read_jsonl(tmp_path / "live" / "extracted.jsonl")]
    assert [ctx.table.doc_ids[int(r)] for r in rep.rows] == live_ids
    live_rounds = [(r["round"], r["cluster"], r["doc_ids"]) for r in read_jsonl(tmp_path / "live" / "rounds.jsonl")]
    assert [(a, b, [ctx.table.doc_ids[int(x)] for x in rows]) for a, b, rows in rep.rounds] == live_rounds
    # the pair vectors match bit for bit (pairs are embedded per document, not per round)
    dim = ctx.table.dim
    live_vecs = np.concatenate([np.fromfile(tmp_path / "live" / "state" / f, dtype=np.float32).reshape(-1, dim)
                                for f in ("warmup_vectors.f32", "bandit_vectors.f32")])
    assert np.array_equal(live_vecs, rep.vectors)
    # the questions compare's metrics read (distinct3) are those of the pairs the live run kept
    live_pairs = sum(e["n_pairs"] for e in read_jsonl(tmp_path / "live" / "extracted.jsonl"))
    assert len(ctx.table.questions_of(ctx.rows_to_table[rep.rows], rep.kept)) == live_pairs == len(rep.vectors)
    if cfg.extract.drop_rules:  # the rules dropped pairs, so the match above is not that of an unfiltered run
        assert len(rep.vectors) < int(ctx.table.n_pairs[ctx.rows_to_table[rep.rows]].sum())


def test_compare_writes_results_for_every_policy_budget_and_seed(small, tmp_path):
    d, p, cfg, table_dir = small
    out = tmp_path / "cmp"
    cmd = [sys.executable, "-m", "equal.cli", "compare", "--corpus", str(p), "--reference", str(REF_CODE),
           "--table", str(table_dir), "--policies", "equal,avg-sim,random,full", "--budgets", "0.1,0.2",
           "--seeds", "2", "--out", str(out), "--label-field", "domain", "--target", "code", "-q",
           "--set", "embed.max_seq_length=128", "--set", "embed.chunk_docs=256"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 3 * 2 * 2 + 1
    assert {(x["policy"], x["budget"]) for x in rows} >= {("equal", "0.1"), ("random", "0.2"), ("full", "1.0")}
    for x in rows:
        if x["policy"] == "full":
            assert int(x["calls"]) == 400
        else:
            assert int(x["calls"]) == round(float(x["budget"]) * 400)
        assert 0 < float(x["ot"]) < 2 and 0 <= float(x["on_target"]) <= 1
    rand = [float(x["on_target"]) for x in rows if x["policy"] == "random"]
    sim = [float(x["on_target"]) for x in rows if x["policy"] == "avg-sim"]
    assert np.mean(sim) > np.mean(rand) + 0.2  # the code reference steers the ranking to code
    md = (out / "results.md").read_text()
    assert "| equal |" in md and "first reaches the OT distance of `full`" in md
    from PIL import Image

    for name in ("ot.png", "on_target.png"):
        Image.open(out / name).verify()
    meta = json.loads((out / "results.json").read_text())
    assert meta["config"]["embed"]["max_seq_length"] == 128 and meta["commit"]
    # the held-out part never reaches the runs
    run_q = {json.loads(l)["question"] for l in open(out / "reference_run.jsonl")}
    eval_q = {json.loads(l)["question"] for l in open(out / "reference_eval.jsonl")}
    assert run_q and eval_q and not run_q & eval_q
