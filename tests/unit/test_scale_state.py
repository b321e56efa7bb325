"""At scale: cluster membership is two arrays, and the selection loop holds nothing that grows with N."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np

from equal.config import BanditConfig

from equal.score import Scorer
from equal.select import recipe
from equal.select.envs import PullResult
from equal.select.loop import LoopState, run_loop
from equal.select.members import Members
from equal.select.rewards import SelectedPool, make_reward

K, DIM = 40, 8


def test_members_are_two_arrays_in_the_order_pulls_take():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, K, 5000).astype(np.int32)
    labels[labels == 7] = 8  # an empty arm
    exclude = rng.choice(5000, 300, replace=False)
    m = recipe.arm_members(labels, K, exclude, seed=3)
    assert isinstance(m, Members) and len(m) == K and m.nbytes == 8 * (len(m.rows) + K + 1)
    perm = np.random.default_rng([3, 0xC1]).permutation(5000)  # the seeded in-cluster order
    keep = np.ones(5000, bool)
    keep[exclude] = False
    for j in range(K):
        want = [r for r in perm if labels[r] == j and keep[r]]
        assert m[j].tolist() == want
    assert len(m[7]) == 0 and m.sizes().sum() == 5000 - 300 and list(map(len, m)) == m.sizes().tolist()
    sim = rng.random(5000).astype(np.float32)
    ms = recipe.arm_members(labels, K, exclude, seed=3, order="similarity", sim=sim)
    assert all((np.diff(sim[ms[j]]) <= 0).all() for j in range(K))  # most similar first, inside each arm


class FakeEnv:
    """Two pairs per document, vectors a fixed function of the row: a pull costs O(pull), nothing O(N)."""

    dim = DIM

    def pull(self, rows):
        rows = np.asarray(rows, dtype=np.int64)
        n = np.full(len(rows), 2, dtype=np.int64)
        base = np.stack([np.sin(np.outer(rows % 101 + 1, np.arange(1, DIM + 1)) * 0.1 + s) for s in (0.0, 0.5)], 1)
        vecs = base.reshape(-1, DIM).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        return PullResult(rows=rows, doc_ids=[str(r) for r in rows.tolist()], status=["ok"] * len(rows),
                          n_pairs=n, vectors=vecs)


def _loop(n_docs: int, budget: int, trace: bool):
    labels = (np.arange(n_docs) * 7919 % K).astype(np.int32)
    members = recipe.arm_members(labels, K, np.zeros(0, np.int64), seed=0)
    ref = np.random.default_rng(1).normal(size=(50, DIM)).astype(np.float32)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    reward = make_reward("batch", Scorer(ref))
    policy = recipe.make_policy("equal", K, BanditConfig(alpha=0.5, alpha_schedule="constant", epsilon=0.1, thompson_sigma=0.1))
    pool = SelectedPool(DIM, 200, 0)
    states = []
    if trace:
        tracemalloc.start()
    final = run_loop(policy, FakeEnv(), reward, members, budget, 3, 4,
                     LoopState(round=0, docs_used=0, pointers=[0] * K, policy=policy.state_dict()), pool, 0,
                     on_round=lambda rr, st: states.append(len(json.dumps(st.to_dict()))))
    peak = 0
    if trace:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return final, states, peak, pool, members


def test_loop_state_does_not_grow_with_the_corpus_or_the_rounds():
    small = _loop(4_000, 600, trace=False)  # also warms imports (POT) before anything is measured
    _, _, peak_small, _, mem_small = _loop(4_000, 600, trace=True)
    final, states, peak_big, pool, mem_big = _loop(400_000, 600, trace=True)
    # the membership arrays hold the corpus (8 bytes a row) ...
    assert mem_big.nbytes - mem_small.nbytes == 8 * (400_000 - 4_000)
    # ... and the loop's own allocations do not scale with it (3 MiB more rows, same peak within 64 KiB)
    assert peak_big - peak_small < 64 * 1024, (peak_small, peak_big)
    # the checkpointed state is O(k): its size after 50 rounds is about its size after 5
    assert final.round == len(states) == 50 and len(final.pointers) == K
    def lists(d):
        return [v for x in d.values() for v in ([x] if isinstance(x, list) else lists(x) if isinstance(x, dict)
                                                else [])]
    assert all(len(v) == K for v in lists(final.to_dict()))
    assert max(states) < 100 * K
    assert small[0].docs_used == final.docs_used == 600
    assert len(pool.vectors) == 200 and pool.total == 2 * 600  # the reward pool is capped
