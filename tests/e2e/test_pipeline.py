"""End-to-end runs on a slice of the shared corpus with the real embedder, k-means and OT."""

import json
import subprocess
import sys

import numpy as np
import pytest

from equal import Config, run
from equal.evaluate import bandit_doc_ids, labels_by_id, on_target_fraction
from equal.io import read_jsonl
from equal.run import work_log

from conftest import CORPUS, REF_MATH, small_config


@pytest.fixture(scope="module")
def math_run(slice_path, tmp_path_factory):
    """The shipped selection defaults (small_config sets a random 50% warm-up for the other tests; not here)."""
    d = Config().align
    cfg = small_config(tmp_path_factory.mktemp("math"), slice_path, budget=0.2,
                       **{"align.warmup_fraction": d.warmup_fraction, "align.warmup_sampling": d.warmup_sampling})
    return cfg, run(cfg, progress=False)


def test_bandit_picks_mostly_math_and_more_than_random(math_run, slice_path):
    cfg, res = math_run
    labels = labels_by_id(slice_path, "domain")
    ids = bandit_doc_ids(cfg.out)
    assert len(ids) == res.summary["docs_bandit"] > 50
    frac = on_target_fraction(ids, labels, "math")
    rng = np.random.default_rng(0)
    all_ids = list(labels)
    random_frac = np.mean([on_target_fraction(rng.choice(all_ids, len(ids), replace=False), labels, "math")
                           for _ in range(20)])
    assert frac > 0.5, frac
    assert frac > random_frac + 0.2, (frac, random_frac)


def test_run_folder_files_and_budget(math_run):
    cfg, res = math_run
    s = res.summary
    n_docs = s["docs_total"]
    assert n_docs == 1500
    assert s["docs_extracted"] == round(0.2 * n_docs) == s["docs_warmup"] + s["docs_bandit"]
    rounds = list(read_jsonl(f"{cfg.out}/rounds.jsonl"))
    dataset = list(read_jsonl(f"{cfg.out}/dataset.jsonl"))
    assert [r["round"] for r in rounds] == sorted(r["round"] for r in rounds) and rounds[0]["round"] == 1
    for r in rounds:
        assert set(r) == {"round", "cluster", "doc_ids", "n_pairs", "reward", "score", "pulls"}
    bandit_ids = [d for r in rounds for d in r["doc_ids"]]
    assert len(bandit_ids) == len(set(bandit_ids)) == s["docs_bandit"]
    warm_ids = {p["doc_id"] for p in dataset if p["round"] == 0}
    assert not warm_ids & set(bandit_ids)  # the bandit samples unseen documents only
    assert len(dataset) == s["pairs"]
    for p in dataset:
        assert {"question", "answer", "doc_id", "cluster", "round", "extractor"} <= set(p)
        assert p["question"] and p["answer"]
    # each round line's n_pairs matches the pairs written for that (round, cluster)
    for r in rounds:
        assert r["n_pairs"] == sum(1 for p in dataset if p["round"] == r["round"] and p["cluster"] == r["cluster"])
    # pulls count up per cluster
    last = {}
    for r in rounds:
        assert r["pulls"] > last.get(r["cluster"], 0)
        last[r["cluster"]] = r["pulls"]
    assert 0 < s["final_ot"] < 1
    assert set(s["stage_seconds"]) >= {"embed", "warmup", "align", "cluster", "bandit", "finalize"}
    assert s["config"]["budget"] == 0.2
    # no wall-clock values: only provenance fields (timings live in summary.json)
    allowed = {"question", "answer", "doc_id", "cluster", "round", "extractor", "rule"}
    assert all(set(p) <= allowed for p in dataset)


def test_extracted_jsonl_accounts_for_every_call(math_run):
    cfg, res = math_run
    s = res.summary
    ext = list(read_jsonl(f"{cfg.out}/extracted.jsonl"))
    dataset = list(read_jsonl(f"{cfg.out}/dataset.jsonl"))
    rounds = list(read_jsonl(f"{cfg.out}/rounds.jsonl"))
    assert len(ext) == s["docs_extracted"] == len({e["doc_id"] for e in ext})
    assert sum(e["round"] == 0 for e in ext) == s["docs_warmup"]
    assert [d for e in ext if e["round"] > 0 for d in [e["doc_id"]]] == [d for r in rounds for d in r["doc_ids"]]
    for e in ext:
        assert set(e) == {"doc_id", "round", "n_pairs", "status"}
        assert e["status"] in {"ok", "empty", "failed"}
        assert (e["n_pairs"] > 0) == (e["status"] == "ok")
    per_doc = {}
    for p in dataset:
        per_doc[p["doc_id"]] = per_doc.get(p["doc_id"], 0) + 1
    assert {e["doc_id"]: e["n_pairs"] for e in ext if e["n_pairs"]} == per_doc  # every pair stays in dataset.jsonl


def test_same_seed_same_files_and_finished_run_is_left_alone(slice_path, tmp_path):
    small = tmp_path / "small.jsonl"
    with open(slice_path) as src, open(small, "w") as dst:
        for _, line in zip(range(300), src):
            dst.write(line)
    a = small_config(tmp_path / "a", small, budget=0.3, **{"out": str(tmp_path / "a")})
    b = a.replace(out=str(tmp_path / "b"))
    run(a, progress=False)
    run(b, progress=False)
    for name in ("dataset.jsonl", "rounds.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    files = sorted(p for p in (tmp_path / "a").rglob("*") if p.is_file())
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    again = run(a.replace(**{"extract.llm.concurrency": 3}), progress=False)  # an operational change only
    assert again.already_finished
    assert sorted(p for p in (tmp_path / "a").rglob("*") if p.is_file()) == files
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files} == before  # nothing touched
    c = a.replace(out=str(tmp_path / "c"), seed=1)
    run(c, progress=False)
    assert (tmp_path / "c" / "rounds.jsonl").read_bytes() != (tmp_path / "a" / "rounds.jsonl").read_bytes()
    # b took a's corpus and reference vectors from the shared cache; c, with another seed, has another reward
    # sample of the reference to embed, but the same prior sample (seed-independent)
    (wb,), (wc,) = work_log(tmp_path / "b"), work_log(tmp_path / "c")
    assert wb["embedded"] == 0 and wb["reference"] == 0, wb
    assert wc["embedded"] == 0 and wc["reference"] <= a.score.reference_sample < a.score.prior_sample, wc


def test_cli_end_to_end_with_the_openai_extractor(openai_server, slice_path, tmp_path, monkeypatch):
    small = tmp_path / "small.jsonl"
    with open(slice_path) as src, open(small, "w") as dst:
        for _, line in zip(range(200), src):
            dst.write(line)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "equal.cli", "run", "--corpus", str(small), "--reference", str(REF_MATH),
           "--out", str(out), "--extractor", "openai", "--llm-base-url", openai_server.url, "--llm-model", "test",
           "--budget", "40", "--cache-dir", str(tmp_path / "cache"), "--quiet",
           "--set", "embed.max_seq_length=128", "--set", "score.prior_sample=200"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "dataset:" in r.stdout and str(out / "summary.json") in r.stdout
    summary = json.loads((out / "summary.json").read_text())
    dataset = list(read_jsonl(out / "dataset.jsonl"))
    assert summary["docs_extracted"] == 40
    assert openai_server.count("extract") == 40  # one request per document
    assert summary["extraction_calls"] == 40
    assert dataset and all(p["extractor"] == "openai" for p in dataset)
    texts = {json.loads(l)["id"]: json.loads(l)["text"] for l in open(small)}
    grounded = sum(p["answer"][:60] in texts[p["doc_id"]] for p in dataset)
    assert grounded / len(dataset) > 0.9


def test_fatal_input_errors_fail_fast(tmp_path):
    from conftest import write_jsonl

    corpus = write_jsonl(tmp_path / "c.jsonl", [{"id": str(i), "text": f"document {i} text"} for i in range(5)])
    empty_ref = tmp_path / "ref.jsonl"
    empty_ref.write_text("")
    cases = [
        (["--corpus", str(tmp_path / "missing.jsonl"), "--reference", str(REF_MATH)], "corpus not found"),
        (["--corpus", str(corpus), "--reference", str(empty_ref)], "is empty"),
        (["--corpus", str(corpus), "--reference", str(REF_MATH), "--clusters", "50"], "larger than the corpus"),
    ]
    for args, needle in cases:
        r = subprocess.run([sys.executable, "-m", "equal.cli", "run", *args, "--out", str(tmp_path / "o"), "-q"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, (args, r.stderr)
        assert needle in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_bad_records_are_counted_in_the_summary(tmp_path, corpus_records):
    lines = [json.dumps(r) for r in corpus_records[:80]]
    lines[5:5] = ["{not json", json.dumps({"id": "x1", "text": "   "}), json.dumps({"id": "x2"}),
                  json.dumps({"id": "x3", "text": 42}), json.dumps(corpus_records[0])]  # last: duplicate id
    p = tmp_path / "c.jsonl"
    p.write_bytes(("\n".join(lines) + "\n").encode() + b'{"id": "bad-utf8", "text": "caf\xe9 au lait, a valid document"}\n')
    cfg = small_config(tmp_path, p, budget=20)
    s = run(cfg, progress=False).summary
    assert s["skipped"] == {"malformed_json": 1, "empty_text": 1, "missing_text": 1, "non_string_text": 1,
                            "duplicate_id": 1}
    assert s["corpus_notes"].get("invalid_utf8") == 1
    assert s["docs_total"] == 81 and s["docs_extracted"] == 20


def test_unwritable_output_folder_is_a_clear_error(tmp_path, slice_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    r = subprocess.run([sys.executable, "-m", "equal.cli", "run", "--corpus", str(slice_path), "--reference",
                        str(REF_MATH), "--out", str(blocker / "run"), "-q"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "cannot write to the output folder" in r.stderr and "Traceback" not in r.stderr


def test_full_alignment_fine_tunes_and_embeds_with_the_tuned_model(tmp_path, slice_path):
    from equal.embed import make_embedder
    from equal.vectors import cache_root

    small = tmp_path / "small.jsonl"
    with open(slice_path) as src, open(small, "w") as dst:
        for _, line in zip(range(150), src):
            dst.write(line)
    # every pair kept: with the default's quality rules 60 calls on these documents leave too few to fine-tune on
    cfg = small_config(tmp_path, small, budget=60, **{"align.mode": "full", "embed.cache": False,
                                                      "extract.drop_rules": []})
    res = run(cfg, progress=False)
    out = tmp_path / "run"
    assert (out / "model" / "config.json").exists()
    align = res.summary["align"]
    assert align["examples"] > 20 and align["train_loss"] > 0
    stored = np.load(out / "state" / "doc_vectors_full.npy")
    # on the run's backend (int8 by default: the tuned model is exported and quantized too), in the run's
    # first block of batch_size documents (int8 activations are quantized per batch)
    texts = [json.loads(l)["text"] for l in open(small)][:cfg.embed.batch_size]
    tuned = make_embedder(str(out / "model"), cfg.embed.batch_size, cfg.embed.max_seq_length, device="cpu",
                          cache_root=cache_root(cfg), backend=cfg.embed.backend).encode(texts)[:8]
    base = make_embedder(batch_size=cfg.embed.batch_size, max_seq_length=cfg.embed.max_seq_length, device="cpu",
                         cache_root=cache_root(cfg), backend=cfg.embed.backend).encode(texts)[:8]
    assert np.allclose(stored[:8], tuned, atol=1e-4)  # the corpus was embedded with the tuned model
    assert not np.allclose(tuned, base, atol=1e-3)  # and tuning changed it
    assert len(bandit_doc_ids(out)) == 30
