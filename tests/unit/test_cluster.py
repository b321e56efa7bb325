import numpy as np

from equal.cluster import kmeans


def _blobs(seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(4, 8)) * 5
    x = np.concatenate([c + rng.normal(size=(50, 8)) for c in centers]).astype(np.float32)
    truth = np.repeat(np.arange(4), 50)
    return x, truth


def test_assignments_stable_under_a_seed():
    x, _ = _blobs()
    a = kmeans(x, 4, niter=20, seed=3)
    b = kmeans(x, 4, niter=20, seed=3)
    assert np.array_equal(a.labels, b.labels)
    assert np.allclose(a.centroids, b.centroids)


def test_recovers_separated_blobs():
    x, truth = _blobs(1)
    c = kmeans(x, 4, niter=20, seed=0, nredo=5)
    # each true blob maps to exactly one cluster
    for t in range(4):
        assert len(set(c.labels[truth == t].tolist())) == 1
    assert len(set(c.labels.tolist())) == 4


def test_members_partition_the_documents_in_seeded_order():
    x, _ = _blobs(2)
    c = kmeans(x, 4, niter=10, seed=0)
    m1, m2 = c.members(7), c.members(7)
    allm = np.concatenate(m1)
    assert sorted(allm.tolist()) == list(range(len(x)))
    for j, m in enumerate(m1):
        assert (c.labels[m] == j).all()
        assert np.array_equal(m, m2[j])
    assert any(not np.array_equal(a, b) for a, b in zip(m1, c.members(8)))


def test_k_larger_than_n_is_an_error():
    import pytest

    with pytest.raises(ValueError, match="larger than the corpus"):
        kmeans(np.zeros((3, 2), np.float32), 5)
