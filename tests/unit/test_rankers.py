"""DSIR and TSDS rankers (equal.select.dsir, equal.select.tsds) on tiny hand-built inputs."""

from __future__ import annotations

import heapq
import subprocess
import sys

import numpy as np
import pytest

from equal.select.dsir import dsir_log_weights, dsir_order, fit_ngram_model, hashed_ngram_counts
from equal.select.tsds import tsds_order, tsds_probabilities

MATH_TARGET = [
    "Tom has 5 apples and buys 3 more apples. How many apples does Tom have now?",
    "A train travels 60 miles per hour for 3 hours. How many miles does the train travel?",
    "Sara had 12 pencils and gave 4 pencils to her friend. How many pencils does Sara have left?",
    "If 4 boxes hold 24 books, how many books does each box hold?",
    "John saves 10 dollars each week. How many dollars does John save in 6 weeks?",
]
MATH_DOCS = [
    "Anna has 7 apples and eats 2 apples. How many apples does Anna have left?",
    "A car travels 50 miles per hour for 2 hours. How many miles does the car travel?",
    "Each box holds 6 books. How many books do 5 boxes hold?",
    "Mike had 20 dollars and spent 8 dollars. How many dollars does Mike have left?",
]
RECIPE_DOCS = [
    "Preheat the oven to 350 degrees. Whisk the eggs with sugar and fold in the flour.",
    "Chop the onions and garlic, then fry them in olive oil until golden and fragrant.",
    "Simmer the tomato sauce with basil for twenty minutes and season with salt and pepper.",
    "Knead the dough for ten minutes, cover it and let it rise in a warm place.",
]


# --------------------------------------------------------------------------- DSIR

def _mix64_py(x: int) -> int:
    """Pure-Python SplitMix64 finaliser, written independently of the numpy one."""
    m = (1 << 64) - 1
    x = (x + 0x9E3779B97F4A7C15) & m
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
    return x ^ (x >> 31)


def _bucket_py(words: list[str], num_buckets: int) -> int:
    import zlib

    m = (1 << 64) - 1
    h = _mix64_py(zlib.crc32(words[0].encode("utf-8")))
    for order, w in enumerate(words[1:], start=2):
        h = _mix64_py((h * 0x100000001B3 + zlib.crc32(w.encode("utf-8")) + order) & m)
    return h % num_buckets


def test_hash_is_stable_hard_coded():
    # Computed once with `hashed_ngram_counts(["hello world"]).indices` (num_buckets=10_000) and
    # cross-checked by the pure-Python _bucket_py above: crc32("hello") -> SplitMix64 -> % 10_000 = 9513;
    # the bigram "hello world" -> 2975, "world" -> 9455. Python's salted hash() would change these
    # from one process to the next.
    m = hashed_ngram_counts(["hello world"], num_buckets=10_000)
    assert sorted(m.indices.tolist()) == [2975, 9455, 9513]
    assert _bucket_py(["hello"], 10_000) == 9513
    assert _bucket_py(["world"], 10_000) == 9455
    assert _bucket_py(["hello", "world"], 10_000) == 2975


def test_hash_matches_pure_python_and_other_process():
    words = ["the", "train", "travels", "60", "miles", "naïve", "café"]
    text = " ".join(words)
    m = hashed_ngram_counts([text], num_buckets=997, ngrams=3)
    expected = [_bucket_py(words[i:i + n], 997) for n in (1, 2, 3) for i in range(len(words) - n + 1)]
    got = np.repeat(m.indices, m.data)
    assert sorted(got.tolist()) == sorted(expected)
    # a fresh interpreter with another hash seed agrees
    code = ("from equal.select.dsir import hashed_ngram_counts as h;"
            f"m=h([{text!r}], num_buckets=997, ngrams=3); print(sorted(m.indices.tolist()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "12345", "PATH": ""}).stdout
    assert out.strip() == str(sorted(m.indices.tolist()))


def test_counts_shape_case_and_document_boundaries():
    m = hashed_ngram_counts(["Hello hello world", "", "a b"], num_buckets=1000)
    assert m.shape == (3, 1000)
    dense = m.toarray()
    assert dense[0].sum() == 5  # 3 unigrams + 2 bigrams
    assert dense[0, _bucket_py(["hello"], 1000)] >= 2  # case folded
    assert dense[1].sum() == 0
    assert dense[2].sum() == 3  # "a", "b", "a b": no bigram across documents
    assert hashed_ngram_counts(["a b c"], num_buckets=1000, ngrams=1).sum() == 3


def test_fit_ngram_model_laplace():
    counts = np.array([[3, 0, 1, 0], [1, 0, 0, 0]])
    lp = fit_ngram_model(counts, smoothing=1.0)
    # totals [4, 0, 1, 0] + 1 -> [5, 1, 2, 1] / 9
    np.testing.assert_allclose(np.exp(lp), np.array([5, 1, 2, 1]) / 9)
    np.testing.assert_allclose(fit_ngram_model(counts.sum(axis=0)), lp)
    with pytest.raises(ValueError):
        fit_ngram_model(counts, smoothing=0.0)


def test_dsir_prefers_target_like_documents():
    docs = MATH_DOCS + RECIPE_DOCS
    w = dsir_log_weights(docs, MATH_TARGET, num_buckets=10_000)
    math_w, recipe_w = w[: len(MATH_DOCS)], w[len(MATH_DOCS):]
    assert math_w.min() > recipe_w.max()
    # and the order resamples the math documents first when the gap is this large
    assert set(dsir_order(w, len(MATH_DOCS), rng=0).tolist()) == set(range(len(MATH_DOCS)))


def test_dsir_weights_match_formula_and_chunking():
    docs = MATH_DOCS + RECIPE_DOCS
    raw = docs + ["An unrelated sentence about the weather today."]
    w = dsir_log_weights(docs, MATH_TARGET, raw_texts=raw, num_buckets=500, chunk_size=3)
    log_diff = fit_ngram_model(hashed_ngram_counts(MATH_TARGET, 500)) - fit_ngram_model(hashed_ngram_counts(raw, 500))
    np.testing.assert_allclose(w, hashed_ngram_counts(docs, 500) @ log_diff)
    np.testing.assert_allclose(dsir_log_weights(docs, MATH_TARGET, raw_texts=raw, num_buckets=500, chunk_size=1000), w)
    # raw defaults to the documents themselves
    np.testing.assert_allclose(dsir_log_weights(docs, MATH_TARGET, num_buckets=500),
                               dsir_log_weights(docs, MATH_TARGET, raw_texts=docs, num_buckets=500))
    with pytest.raises(TypeError):
        dsir_log_weights(iter(docs), MATH_TARGET)


def test_dsir_order_distinct_seeded_and_peaked():
    rng = np.random.default_rng(0)
    lw = rng.normal(size=200)
    a = dsir_order(lw, 50, rng=7)
    assert len(a) == 50 and len(set(a.tolist())) == 50
    np.testing.assert_array_equal(a, dsir_order(lw, 50, rng=np.random.default_rng(7)))
    assert not np.array_equal(a, dsir_order(lw, 50, rng=8))
    full = dsir_order(lw, 200, rng=1)
    assert sorted(full.tolist()) == list(range(200))

    peaked = np.zeros(100)
    peaked[[10, 40, 70]] = [100.0, 70.0, 40.0]
    for seed in range(20):
        assert dsir_order(peaked, 3, rng=seed).tolist() == [10, 40, 70]


def test_dsir_order_first_pick_follows_weights():
    # Gumbel-top-k: the first pick has probability w_i / sum(w)
    lw = np.log(np.array([1.0, 2.0, 7.0]))
    rng = np.random.default_rng(123)
    firsts = np.array([dsir_order(lw, 1, rng)[0] for _ in range(20_000)])
    freq = np.bincount(firsts, minlength=3) / len(firsts)
    np.testing.assert_allclose(freq, [0.1, 0.2, 0.7], atol=0.015)


def test_dsir_order_zero_weight_last_and_bad_input():
    lw = np.array([-np.inf, 0.0, -np.inf, 1.0])
    o = dsir_order(lw, 4, rng=0)
    assert set(o[:2].tolist()) == {1, 3} and set(o[2:].tolist()) == {0, 2}
    assert len(dsir_order(lw, 0, rng=0)) == 0
    with pytest.raises(ValueError):
        dsir_order(lw, 5, rng=0)
    with pytest.raises(ValueError):
        dsir_order(np.array([0.0, np.nan]), 1, rng=0)


# --------------------------------------------------------------------------- TSDS

def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def _authors_knn_kde(xq, xb, max_k, kde_k, sigma, alpha, C):
    """Transcription of the probability assignment in ZifanL/TSDS tsds.py (MIT), with exact search."""
    d2 = ((xq[:, None, :].astype(np.float64) - xb[None, :, :]) ** 2).sum(-1)
    top_indices = np.argsort(d2, axis=1, kind="stable")[:, :max_k]
    top_dists = np.sqrt(np.take_along_axis(d2, top_indices, axis=1))
    if sigma == 0:
        top_kdes = np.ones_like(top_dists)
    else:
        union = sorted(set(top_indices.ravel().tolist()))
        f = xb[union].astype(np.float64)
        dd = np.sort(((f[:, None, :] - f[None, :, :]) ** 2).sum(-1), axis=1)[:, :kde_k]
        kernel = 1 - dd / sigma ** 2
        kde = (kernel * (kernel > 0)).sum(-1)
        kde_map = dict(zip(union, kde))
        top_kdes = np.vectorize(lambda t: kde_map[t])(top_indices)
    M, N = top_indices.shape[0], xb.shape[0]
    last_k = [0] * M
    heap = [(1.0 / top_kdes[j][0], 0, j) for j in range(M)]
    heapq.heapify(heap)
    dws = [top_dists[j][0] / top_kdes[j][0] for j in range(M)]
    s, cost, total = 0, np.zeros(M), 0.0
    while heap:
        count, ck, cj = heapq.heappop(heap)
        s = count
        total -= cost[cj]
        cost[cj] = top_dists[cj][ck + 1] * count - dws[cj]
        total += cost[cj]
        if alpha / C * total >= (1 - alpha) * M:
            break
        last_k[cj] = ck
        if ck < max_k - 2:
            heapq.heappush(heap, (count + 1.0 / top_kdes[cj][ck + 1], ck + 1, cj))
            dws[cj] += top_dists[cj][ck + 1] / top_kdes[cj][ck + 1]
    probs = np.zeros(N)
    for j in range(M):
        ps = 0.0
        for kk in range(last_k[j] + 1):
            probs[top_indices[j][kk]] += 1 / M / s / top_kdes[j][kk]
            ps += 1 / M / s / top_kdes[j][kk]
        probs[top_indices[j][last_k[j] + 1]] += max(1.0 / M - ps, 0)
    return probs


@pytest.mark.parametrize("alpha,C,sigma", [(0.5, 5.0, 0.75), (0.8, 5.0, 0.75), (0.5, 1.0, 0.3), (0.9, 0.5, 0.75),
                                           (0.5, 5.0, 0.0)])
def test_tsds_matches_authors_algorithm(alpha, C, sigma):
    rng = np.random.default_rng(3)
    centres = _unit(rng.normal(size=(6, 8)))
    xb = _unit(np.repeat(centres, 20, axis=0) + 0.35 * rng.normal(size=(120, 8)))
    xb = np.concatenate([xb, xb[:10]])  # exact duplicates too
    xq = _unit(centres[:3] + 0.2 * rng.normal(size=(3, 8)))
    ours = tsds_probabilities(xb, xq, k=40, density_k=40, alpha=alpha, C=C, sigma=sigma)
    theirs = _authors_knn_kde(xq, xb, 40, 40, sigma, alpha, C)
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def _star(theta_deg=30.0, n_far=5, d=12):
    """ref = e0; lone point L at theta on one side; D (3 exact copies) at theta on the other; far points."""
    t = np.deg2rad(theta_deg)
    e = np.eye(d)
    lone = np.cos(t) * e[0] + np.sin(t) * e[1]
    dup = np.cos(t) * e[0] - np.sin(t) * e[1]
    far = [0.2 * e[0] + e[2 + i] for i in range(n_far)]
    docs = _unit(np.stack([lone, dup, dup, dup, *far]))
    return docs, _unit(e[:1])


def test_tsds_density_splits_duplicates():
    docs, ref = _star()
    p = tsds_probabilities(docs, ref, k=len(docs))
    assert p[0] > 0 and p[1] > 0
    assert p[1] == pytest.approx(p[2]) == pytest.approx(p[3])
    assert p[1] < p[0]
    assert 3 * p[1] == pytest.approx(p[0], rel=1e-5)  # the copies share one document's worth
    # without the density term the copies are as likely as the lone point
    p0 = tsds_probabilities(docs, ref, k=len(docs), sigma=0.0)
    assert p0[1] == pytest.approx(p0[0], rel=1e-5)


def test_tsds_mass_near_reference_and_sums_to_one():
    # 30 candidates about 0.66 from the reference direction but about 0.9 from one another (not
    # near-duplicates at sigma = 0.75), 70 on the opposite side (about 1.9 away)
    rng = np.random.default_rng(0)
    ref_dir = _unit(rng.normal(size=64))
    near = _unit(ref_dir + 0.8 * _unit(rng.normal(size=(30, 64))))
    far = _unit(-ref_dir + 0.5 * _unit(rng.normal(size=(70, 64))))
    docs = np.concatenate([near, far])
    refs = _unit(ref_dir + 0.1 * _unit(rng.normal(size=(5, 64))))
    p = tsds_probabilities(docs, refs, k=100)
    assert p.shape == (100,) and (p >= 0).all()
    assert p.sum() == pytest.approx(1.0)
    assert p[:30].sum() > 0.99
    # alpha = 1: pure transport, every reference sends its mass to its nearest candidate
    p1 = tsds_probabilities(docs, refs, k=10, alpha=1.0)
    nearest = np.argmax(refs @ docs.T, axis=1)
    expected = np.bincount(nearest, minlength=100) / len(refs)
    np.testing.assert_allclose(p1, expected, atol=1e-9)


def test_tsds_chunked_and_memmap_match(tmp_path):
    rng = np.random.default_rng(5)
    docs = rng.normal(size=(57, 8)).astype(np.float32)
    refs = rng.normal(size=(4, 8)).astype(np.float32)
    p = tsds_probabilities(docs, refs, k=20, density_k=10)
    np.save(tmp_path / "d.npy", docs)
    mm = np.load(tmp_path / "d.npy", mmap_mode="r")
    np.testing.assert_allclose(tsds_probabilities(mm, refs, k=20, density_k=10, chunk_size=5), p, atol=1e-9)
    # IVF density path (nprobe covers every list at this size, so it is exact here)
    np.testing.assert_allclose(tsds_probabilities(docs, refs, k=20, density_k=10, exact_density_max=0), p, atol=1e-6)
    # unnormalised input gives the same as normalised (cosine geometry)
    np.testing.assert_allclose(tsds_probabilities(3 * docs, refs, k=20, density_k=10), p, atol=1e-6)


def test_tsds_order_distinct_seeded_zero_last():
    docs, ref = _star()
    p = tsds_probabilities(docs, ref, k=4)  # support: at most the 4 nearest
    assert (p > 0).sum() <= 4
    o = tsds_order(p, len(docs), rng=11)
    assert sorted(o.tolist()) == list(range(len(docs)))
    support = set(np.flatnonzero(p > 0).tolist())
    assert set(o[: len(support)].tolist()) == support
    np.testing.assert_array_equal(o, tsds_order(p, len(docs), rng=11))
    with pytest.raises(ValueError):
        tsds_order(np.array([0.5, -0.1]), 1, rng=0)


def test_tsds_rejects_bad_input():
    docs, ref = _star()
    with pytest.raises(ValueError):
        tsds_probabilities(docs, ref, alpha=1.5)
    with pytest.raises(ValueError):
        tsds_probabilities(docs, np.zeros((1, 3), dtype=np.float32))
