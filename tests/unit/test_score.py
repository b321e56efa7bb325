import math

import numpy as np
import pytest

from equal.score import Scorer, cost_matrix, ot_distance

from conftest import REF_CODE, REF_MATH


def _unit(rng, n, d):
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_distance_to_itself_is_zero_and_to_a_far_set_larger(metric):
    rng = np.random.default_rng(0)
    X = _unit(rng, 40, 16)
    far = -X  # antipodal points
    assert ot_distance(X, X, metric) == pytest.approx(0.0, abs=1e-9)
    assert ot_distance(X, far, metric) > 0.5
    near = X + 0.05 * _unit(rng, 40, 16)
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    assert 0 < ot_distance(X, near, metric) < ot_distance(X, far, metric)


def test_emd_matches_a_hand_computed_assignment():
    X = np.array([[1.0, 0.0], [0.0, 1.0]])
    Y = np.array([[0.0, 1.0], [1.0, 0.0]])
    # the optimal plan maps each point to its twin: cost 0
    assert ot_distance(X, Y, "cosine") == pytest.approx(0.0, abs=1e-12)
    Z = np.array([[1.0, 0.0], [1.0, 0.0]])
    # half the mass must move 90 degrees (cosine cost 1)
    assert ot_distance(X, Z, "cosine") == pytest.approx(0.5)
    assert cost_matrix(X, Z, "euclidean")[1, 0] == pytest.approx(math.sqrt(2))


def test_sinkhorn_close_to_emd():
    rng = np.random.default_rng(1)
    X, Y = _unit(rng, 30, 8), _unit(rng, 50, 8)
    exact = ot_distance(X, Y, "cosine", "emd")
    approx = ot_distance(X, Y, "cosine", "sinkhorn", reg=0.01)
    assert abs(exact - approx) < 0.05


def test_reward_prefers_pairs_like_the_reference(embedder):
    import json

    def load(path, n):
        with open(path) as f:
            return [json.loads(next(f)) for _ in range(n)]

    math_items = load(REF_MATH, 80)
    code_items = load(REF_CODE, 40)
    ref = embedder.encode([f"{r['question']}\n{r['answer']}" for r in math_items[:40]])
    scorer = Scorer(ref, embedder.encode)
    other_math = embedder.encode([f"{r['question']}\n{r['answer']}" for r in math_items[40:]])
    code = embedder.encode([f"{r['question']}\n{r['answer']}" for r in code_items])
    assert scorer.reward(other_math) > scorer.reward(code) + 0.1
    assert scorer.reward(np.zeros((0, ref.shape[1]), np.float32)) == 0.0
