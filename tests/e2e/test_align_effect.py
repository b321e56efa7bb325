"""The alignment does something: the adapter's InfoNCE loss on its training pairs falls, and a run with
``align.mode: adapter`` clusters other vectors, into other clusters, than a run with ``align.mode: none``.
Through the command line and the run folder only (``math_cli_run``: the math reference, budget 0.1)."""

import json

import numpy as np
import pytest

from conftest import equal_cli, run_args

pytestmark = [pytest.mark.slow, pytest.mark.needs_data]


@pytest.fixture(scope="module")
def no_align_run(slice400, tmp_path_factory):
    out = tmp_path_factory.mktemp("no-align") / "run"
    r = equal_cli(*run_args(slice400, out, "--set", "align.mode=none"))
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def _infonce(run_dir, W, draws=50):
    """The adapter's training objective without its identity penalty: InfoNCE of each warm-up document
    against one of its own pairs, with the other documents' pairs of its batch as negatives, mapped by
    ``W``; averaged over ``draws`` seeded draws of batches and pairs, as in training (equal.align)."""
    from equal.align import AlignExamples, _batches

    summary = json.loads((run_dir / "summary.json").read_text())
    cfg = summary["config"]["align"]
    recs = [json.loads(line) for line in open(run_dir / "state" / "warmup_pairs.jsonl")]
    pair_vecs = np.fromfile(run_dir / "state" / "warmup_vectors.f32", dtype=np.float32).reshape(len(recs), -1)
    doc_vecs = np.load(run_dir / "state" / "doc_vectors.npy")
    ex = AlignExamples.from_pair_docs(np.array([r["doc_index"] for r in recs]), cfg["max_pairs"],
                                      summary["config"]["seed"])

    def mapped(x):
        y = x @ W
        return y / np.linalg.norm(y, axis=1, keepdims=True)

    rng = np.random.default_rng(12345)
    losses = []
    for _ in range(draws):
        for docs, pairs in _batches(ex, cfg["batch_size"], rng):
            logits = mapped(doc_vecs[docs]).astype(np.float64) @ mapped(pair_vecs[pairs]).T / cfg["temperature"]
            m = logits.max(1, keepdims=True)
            lse = (m + np.log(np.exp(logits - m).sum(1, keepdims=True)))[:, 0]
            losses.append(float(np.mean(lse - np.diag(logits))))
    return float(np.mean(losses)), len(ex)


def test_adapter_infonce_on_its_training_pairs_falls(math_cli_run):
    run_dir, _ = math_cli_run
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["config"]["align"]["mode"] == "adapter" and summary["align"]["steps"] > 0
    W = np.load(run_dir / "state" / "adapter.npy")
    before, n = _infonce(run_dir, np.eye(W.shape[0], dtype=np.float32))
    after, _ = _infonce(run_dir, W)
    assert n >= 8 and n == summary["align"]["examples"]
    assert before > 1e-3, before  # something to learn
    assert after < 0.5 * before, (before, after)


@pytest.mark.xfail(strict=True, reason="align.train_adapter reports loss_before/loss_after as InfoNCE plus the "
                   "identity penalty 1e-3*|W-I|^2, on one draw of pairs: on a small warm-up the InfoNCE before "
                   "training is already ~1e-4 and the penalty after (~2e-4) outweighs it, so loss_after > "
                   "loss_before although the InfoNCE itself fell (see the test above)")
def test_summary_reports_the_adapter_loss_falling(math_cli_run):
    run_dir, _ = math_cli_run
    align = json.loads((run_dir / "summary.json").read_text())["align"]
    assert align["loss_after"] < align["loss_before"], align


def test_adapter_run_clusters_other_vectors_than_an_unaligned_run(math_cli_run, no_align_run):
    run_dir, _ = math_cli_run
    base = np.load(run_dir / "state" / "doc_vectors.npy")
    aligned = np.load(run_dir / "state" / "doc_vectors_aligned.npy")
    assert aligned.shape == base.shape
    assert not np.allclose(aligned, base, atol=1e-3)
    assert np.allclose(np.linalg.norm(aligned, axis=1), 1, atol=1e-4)  # still unit vectors
    assert not (no_align_run / "state" / "doc_vectors_aligned.npy").exists()
    # the unaligned run clusters the same base vectors ...
    assert np.array_equal(np.load(no_align_run / "state" / "doc_vectors.npy"), base)
    a = np.load(run_dir / "state" / "clusters.npz")["labels"]
    b = np.load(no_align_run / "state" / "clusters.npz")["labels"]
    assert len(a) == len(b) == len(base)
    # ... into another partition (labels compared as partitions: cluster numbers are arbitrary)
    pairs_a = a[:, None] == a[None, :]
    pairs_b = b[:, None] == b[None, :]
    assert (pairs_a != pairs_b).any()
