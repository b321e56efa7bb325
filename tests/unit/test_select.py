"""The selection layer's units on hand-built inputs: each policy's rule, the rewards, the pool, the loop."""

import math

import numpy as np
import pytest

from equal.score import Scorer
from equal.select import (UCB, BatchOT, EpsilonGreedy, Greedy, LoopState, MarginalGain, ReplayEnv, RoundRobin,
                          SelectedPool, Thompson, run_loop)
from equal.select.policies import make_arm_policy

RNG = np.random.default_rng(0)
ALL = np.ones(4, dtype=bool)


# ---------------------------------------------------------------- UCB
def test_ucb_scores_match_hand_computed_values():
    p = UCB(3, alpha=0.5)
    p.update(0, 0.6)
    p.update(0, 0.4)  # T0=2, mean 0.5
    p.update(1, 0.9)  # T1=1, mean 0.9
    s = p.scores()
    assert math.isclose(s[0], 0.5 + 0.5 * math.sqrt(2 * math.log(3) / 2), rel_tol=1e-12)
    assert math.isclose(s[1], 0.9 + 0.5 * math.sqrt(2 * math.log(3) / 1), rel_tol=1e-12)
    assert s[2] == math.inf  # never pulled: above every pulled arm


def test_ucb_paper_schedule_alpha_is_one_over_total_plus_one():
    p = UCB(2, alpha=123.0, schedule="paper")
    p.update(0, 0.2, pulls=3)
    p.update(1, 0.1)
    assert math.isclose(p.current_alpha(), 1 / 5)
    assert math.isclose(p.scores()[1], 0.1 + 0.2 * math.sqrt(2 * math.log(4) / 1))


def test_ucb_never_pulled_first_and_exhausted_never():
    p = UCB(4, alpha=0.01)
    for arm, r in [(0, 0.9), (1, 0.1), (2, 0.5)]:
        p.update(arm, r)
    avail = ALL.copy()
    assert p.choose(2, avail, RNG) == [3, 0]
    avail[[0, 3]] = False
    assert p.choose(2, avail, RNG) == [2, 1]
    assert p.choose(3, np.zeros(4, dtype=bool), RNG) == []


def test_ucb_exploration_bonus_can_overturn_a_better_mean():
    p = UCB(2, alpha=1.0)
    p.update(0, 0.6, pulls=50)
    p.update(1, 0.5, pulls=1)  # worse mean, far fewer pulls
    assert p.choose(1, np.ones(2, bool), RNG) == [1]
    q = UCB(2, alpha=0.0)
    q.load_state_dict(p.state_dict())
    assert q.choose(1, np.ones(2, bool), RNG) == [0]


def test_prior_is_a_pseudo_observation_that_real_pulls_outweigh():
    p = UCB(3, alpha=0.0)
    p.set_prior(np.array([0.2, 0.5, 0.4]), 1.0)
    assert p.choose(3, np.ones(3, bool), RNG) == [1, 2, 0]  # no pulls yet: the prior orders the arms
    assert p.pulls.sum() == 0
    p.update(1, 0.1, pulls=3)  # arm 1 disappoints: (0.5 + 3 * 0.1) / 4 = 0.2
    assert math.isclose(p.means()[1], 0.2)
    assert p.choose(1, np.ones(3, bool), RNG) == [2]


# ---------------------------------------------------------------- the other rules
def test_greedy_takes_the_best_mean_and_tries_untried_arms_first():
    p = Greedy(3)
    p.update(0, 0.3)
    p.update(1, 0.7)
    assert p.choose(2, np.ones(3, bool), RNG) == [2, 1]
    p.update(2, 0.1)
    assert p.choose(3, np.ones(3, bool), RNG) == [1, 0, 2]


def test_epsilon_greedy_zero_is_greedy_one_is_uniform():
    g = EpsilonGreedy(4, epsilon=0.0)
    for arm, r in enumerate([0.1, 0.9, 0.5, 0.3]):
        g.update(arm, r)
    assert g.choose(2, ALL, np.random.default_rng(1)) == [1, 2]
    u = EpsilonGreedy(4, epsilon=1.0)
    u.load_state_dict(g.state_dict())
    firsts = [u.choose(1, ALL, np.random.default_rng(s))[0] for s in range(400)]
    counts = np.bincount(firsts, minlength=4)
    assert counts.min() > 60  # every arm gets about 100 of 400
    assert u.choose(3, ALL, np.random.default_rng(7)) == u.choose(3, ALL, np.random.default_rng(7))
    assert len(set(u.choose(4, ALL, np.random.default_rng(3)))) == 4


def test_thompson_follows_the_evidence_and_is_seeded():
    t = Thompson(2, sigma=0.01)
    t.update(0, 0.9, pulls=20)
    t.update(1, 0.2, pulls=20)
    assert all(t.choose(1, np.ones(2, bool), np.random.default_rng(s)) == [0] for s in range(50))
    wide = Thompson(2, sigma=5.0)
    wide.load_state_dict(t.state_dict())
    picks = {wide.choose(1, np.ones(2, bool), np.random.default_rng(s))[0] for s in range(50)}
    assert picks == {0, 1}  # with a huge noise scale both arms get drawn
    assert wide.choose(2, np.ones(2, bool), np.random.default_rng(5)) == \
        wide.choose(2, np.ones(2, bool), np.random.default_rng(5))


def test_round_robin_pulls_the_least_pulled_arms():
    r = RoundRobin(4)
    r.update(0, 1.0, pulls=2)
    r.update(1, 0.0)
    r.update(3, 0.5)
    assert r.choose(2, ALL, RNG) == [2, 1]


@pytest.mark.parametrize("name", ["ucb", "greedy", "epsilon-greedy", "thompson", "uniform-clusters"])
def test_state_dict_round_trips(name):
    p = make_arm_policy(name, 3)
    p.update(1, 1 / 3, pulls=2)
    p.set_prior(np.array([0.1, 0.2, 0.3]), 0.5)
    q = make_arm_policy(name, 3)
    q.load_state_dict(p.state_dict())
    assert np.array_equal(p.scores(), q.scores())
    assert p.choose(2, np.ones(3, bool), np.random.default_rng(0)) == q.choose(2, np.ones(3, bool),
                                                                               np.random.default_rng(0))


def test_tracking_prior_fits_a_line_and_keeps_each_arm_s_residual():
    # three pulls: (arm, x, reward) = (0, 0.5, 0.6), (1, 0.4, 0.3), (0, 0.3, 0.4)
    g = Greedy(3)
    g.track(np.array([0.5, 0.4, 0.2]), weight=1.0)
    assert g.calibration() == (0.0, 1.0)  # no fit before three pulls: the similarity itself
    assert np.allclose(g.means(), [0.5, 0.4, 0.2])
    for arm, x, r in [(0, 0.5, 0.6), (1, 0.4, 0.3), (0, 0.3, 0.4)]:
        g.update(arm, r, x=x)
    # least squares by hand: mean x = 0.4, mean r = 13/30; cov = (0.1*(1/6) + 0 + (-0.1)(-1/30)) / 3 = 0.02/3;
    # var x = 0.02/3, so b = 1 and a = 13/30 - 0.4 = 1/30
    a, b = g.calibration()
    assert a == pytest.approx(1 / 30) and b == pytest.approx(1.0)
    g.set_next(np.array([0.25, 0.35, 0.2]))  # arm 0 took its best documents: its next ones are less similar
    # residuals: arm 0: (0.6 - 1/30 - 0.5) + (0.4 - 1/30 - 0.3) = 2/15, over 2 pulls + 1 prior pull;
    # arm 1: 0.3 - 1/30 - 0.4 = -2/15 over 1 + 1; arm 2: untried, no residual
    expected = [1 / 30 + 0.25 + (2 / 15) / 3, 1 / 30 + 0.35 - (2 / 15) / 2, 1 / 30 + 0.2]
    assert np.allclose(g.means(), expected)
    # arm 1's next documents are the most similar (0.35), but its bad residual puts it level with arm 0
    assert g.choose(3, ALL[:3], RNG) == [0, 1, 2]
    q = Greedy(3)
    q.load_state_dict(g.state_dict())
    assert np.array_equal(q.means(), g.means())


def test_tracking_prior_needs_the_covariate_and_falls_back_to_a_shift_for_a_falling_line():
    g = UCB(2, 0.0)
    g.track(np.array([0.5, 0.4]), weight=2.0)
    with pytest.raises(ValueError, match="covariate"):
        g.update(0, 0.5)
    for x, r in [(0.5, 0.2), (0.4, 0.3), (0.3, 0.4)]:  # reward falls as similarity rises
        g.update(0, r, x=x)
    a, b = g.calibration()
    assert b == 1.0 and a == pytest.approx(0.3 - 0.4)


def test_loop_feeds_a_tracking_prior_the_next_documents_covariate():
    table = _Table(60)
    arms = [np.arange(j, 60, 4) for j in range(4)]
    cov = np.linspace(1.0, 0.0, 60)  # earlier rows are "more similar"
    g = Greedy(4)
    g.track(np.zeros(4), weight=100.0)  # a heavy prior: the covariate decides
    seen = []
    run_loop(g, ReplayEnv(table), BatchOT(Scorer(table.vec[:5])), arms, 12, 1, 3, LoopState(pointers=[0] * 4),
             SelectedPool(2, 50), seed=0, covariate=cov,
             on_round=lambda rr, st: seen.extend(int(r) for p in rr.pulls for r in p.result.rows))
    # the covariate falls with the row, so the best next pull is always the arm holding the lowest untaken rows;
    # a prior fixed at the start would have pulled arm 0 (rows 0, 4, 8, 12, ...) again and again
    assert seen == [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]
    assert g.fit_stats[0] == 4 and g.x_sums.sum() == pytest.approx(sum(cov[r] for r in seen) / 3)


# ---------------------------------------------------------------- rewards
E1, E2 = np.array([1.0, 0.0], np.float32), np.array([0.0, 1.0], np.float32)


def test_marginal_gain_against_a_hand_computed_value():
    scorer = Scorer(np.stack([E1, E2]))
    pool = SelectedPool(2, cap=10)
    pool.add(np.stack([E1, E1]))
    r = MarginalGain(scorer)
    # W({e1, e1}) = 1/2 (half the mass must travel e1 -> e2 at cosine cost 1);
    # W({e1, e1, e2}) = 1/6 (only 1/2 - 1/3 of e1's mass must travel).
    assert math.isclose(r.base(pool), 0.5, abs_tol=1e-9)
    assert math.isclose(r.gain(E2[None], pool), 0.5 - 1 / 6, abs_tol=1e-9)
    # per-pair cost explaining the change: (3 * 1/6 - 2 * 1/2) / 1 = -1/2, so the reward is 1.5
    assert math.isclose(r(E2[None], pool), 1.5, abs_tol=1e-9)
    # a pair like those already taken gains nothing (W stays 1/2): reward (3/2 - 1) = 1/2 ...
    assert math.isclose(r.gain(E1[None], pool), 0.0, abs_tol=1e-9)
    assert math.isclose(r(E1[None], pool), 0.5, abs_tol=1e-9)
    # ... while the batch reward cannot tell the two apart
    assert math.isclose(BatchOT(scorer)(E1[None], pool), BatchOT(scorer)(E2[None], pool))
    assert r(np.zeros((0, 2), np.float32), pool) == 0.0
    assert math.isclose(r(E2[None], SelectedPool(2)), BatchOT(scorer)(E2[None], pool))  # empty pool: batch reward


def test_batch_reward_is_one_minus_ot_and_zero_without_pairs():
    scorer = Scorer(np.stack([E1, E2]))
    b = BatchOT(scorer)
    assert math.isclose(b(np.stack([E1, E2]), SelectedPool(2)), 1.0, abs_tol=1e-9)
    assert math.isclose(b(E1[None], SelectedPool(2)), 0.5, abs_tol=1e-9)
    assert b(np.zeros((0, 2), np.float32), SelectedPool(2)) == 0.0


def test_pool_sample_does_not_depend_on_how_vectors_arrive():
    v = np.random.default_rng(3).standard_normal((500, 4)).astype(np.float32)
    a, b = SelectedPool(4, cap=64, seed=9), SelectedPool(4, cap=64, seed=9)
    a.add(v)
    for s in range(0, 500, 37):
        b.add(v[s: s + 37])
    assert len(a) == 64 and a.total == b.total == 500
    assert np.array_equal(a.vectors, b.vectors)
    c = SelectedPool(4, cap=64, seed=10)
    c.add(v)
    assert not np.array_equal(a.vectors, c.vectors)


# ---------------------------------------------------------------- the loop
class _Table:
    """A hand-built extraction table: document i gives i % 3 pairs at a fixed vector."""

    def __init__(self, n, dim=2):
        rng = np.random.default_rng(0)
        self.dim = dim
        self.doc_ids = [f"d{i}" for i in range(n)]
        self.status = ["ok" if i % 3 else "empty" for i in range(n)]
        self.n_pairs = np.array([i % 3 for i in range(n)], dtype=np.int64)
        self.tokens = np.zeros(n, dtype=np.int64)
        v = rng.standard_normal((int(self.n_pairs.sum()), dim)).astype(np.float32)
        self.vec = v / np.linalg.norm(v, axis=1, keepdims=True)
        self.offsets = np.concatenate([[0], np.cumsum(self.n_pairs)])

    def vectors_of(self, rows):
        idx = [np.arange(self.offsets[r], self.offsets[r + 1]) for r in rows]
        return self.vec[np.concatenate(idx)] if idx else np.zeros((0, self.dim), np.float32)


def _loop(state, budget, on_round=None):
    table = _Table(60)
    arms = [np.arange(j, 60, 4) for j in range(4)]  # 15 documents each
    scorer = Scorer(table.vec[:5])
    pool = SelectedPool(2, 50)
    return run_loop(UCB(4, 0.1), ReplayEnv(table), MarginalGain(scorer), arms, budget, 2, 3, state, pool,
                    seed=0, on_round=on_round)


def test_loop_spends_exactly_the_budget_and_never_repeats_a_document():
    seen = []
    final = _loop(LoopState(pointers=[0] * 4), 37, lambda rr, st: seen.extend(
        int(r) for p in rr.pulls for r in p.result.rows))
    assert final.docs_used == 37 == len(seen) == len(set(seen))
    big = _loop(LoopState(pointers=[0] * 4), 1000)
    assert big.docs_used == 60  # every arm exhausted: the loop stops short of the budget


def test_loop_resumed_from_a_saved_state_continues_as_if_never_stopped():
    states, picks = [], []
    _loop(LoopState(pointers=[0] * 4), 30, lambda rr, st: (states.append(st), picks.append(
        [int(r) for p in rr.pulls for r in p.result.rows])))
    # resume from the state after round 2; the pool is rebuilt from what rounds 1-2 selected
    table = _Table(60)
    arms = [np.arange(j, 60, 4) for j in range(4)]
    pool = SelectedPool(2, 50)
    pool.add(table.vectors_of(np.array(picks[0] + picks[1])))
    later = []
    run_loop(UCB(4, 0.1), ReplayEnv(table), MarginalGain(Scorer(table.vec[:5])), arms, 30, 2, 3,
             LoopState.from_dict(states[1].to_dict()), pool, seed=0,
             on_round=lambda rr, st: later.append([int(r) for p in rr.pulls for r in p.result.rows]))
    assert later == picks[2:]


def test_mix_similarity_ranks_between_mean_and_knn():
    from equal.select.recipe import similarity_scores

    # reference: two tight groups, 3 items near e0 and 1 near e1; mean direction ~ e0 (with some e1)
    ref = np.array([[1, 0, 0], [0.99, 0.14, 0], [0.99, -0.14, 0], [0, 1, 0]], dtype=np.float32)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    docs = np.array([[0, 1, 0], [0.8, 0.6, 0], [0.7, 0, 0.71], [0, 0, 1], [0.6, 0.8, 0]], dtype=np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    mean = similarity_scores(docs, ref, "mean")
    knn = similarity_scores(docs, ref, "knn", k=1)
    mix = similarity_scores(docs, ref, "mix", k=1, chunk=2)  # chunks change nothing
    assert np.argmax(knn) == 0 != np.argmax(mean)  # on the lone e1 item: first by knn, not by mean
    q = lambda s: np.argsort(np.argsort(s, kind="stable"), kind="stable") / (len(s) - 1)  # noqa: E731
    assert np.allclose(mix, (q(mean) + q(knn)) / 2)
    assert mix.dtype == np.float32 and mix.min() >= 0 and mix.max() <= 1
    assert np.argmin(mix) == 3  # last by both: last by their mix
    with pytest.raises(ValueError, match="mean, knn, mix or classifier"):
        similarity_scores(docs, ref, "median")


def test_targeted_warmup_pool_factor_sets_the_pool():
    from equal.select.recipe import warmup_rows

    sim = np.arange(100, dtype=np.float32)[::-1].copy()  # row 0 most similar
    for factor, pool in ((1.0, 10), (2.0, 20), (3.0, 30)):
        rows = warmup_rows(100, 10, 0, "targeted", sim, factor)
        assert len(rows) == len(set(rows.tolist())) == 10 and rows.max() < pool
    assert set(warmup_rows(100, 10, 0, "targeted", sim, 1.0).tolist()) == set(range(10))


def test_yield_aware_reward_scales_by_the_share_of_documents_that_gave_pairs():
    from equal.select.envs import PullResult
    from equal.select.setup import yield_cost, yield_share

    def res(n_pairs):
        n = np.asarray(n_pairs, dtype=np.int64)
        return PullResult(rows=np.arange(len(n)), doc_ids=[str(i) for i in range(len(n))], status=["ok"] * len(n),
                          n_pairs=n, vectors=np.zeros((int(n.sum()), 2), np.float32))

    assert yield_share(res([0, 2, 0, 5])) == 0.5 and yield_share(res([1, 1])) == 1.0
    assert yield_cost()(res([3, 0, 0, 0])) == 4.0  # the reward of this pull is divided by 4
    assert yield_cost(lambda r: 2.0)(res([1, 0])) == 4.0  # composes with the length cost
    assert yield_cost()(res([0, 0])) == float("inf")  # no pairs: reward 0 whatever the OT

    # in the loop: the first round pulls the same arms and rows with or without it,
    # and the yield-aware reward of each pull is the batch reward times its share of documents with pairs
    table = _Table(60)
    arms = [np.arange(j, 60, 4) for j in range(4)]
    scorer = Scorer(table.vec[:5])
    got = {}
    for aware in (False, True):
        pulls = []
        run_loop(UCB(4, 0.1), ReplayEnv(table), BatchOT(scorer), arms, 24, 2, 3, LoopState(pointers=[0] * 4),
                 SelectedPool(2, 50), seed=0, cost=yield_cost() if aware else None,
                 on_round=lambda rr, st: pulls.extend(rr.pulls))
        got[aware] = pulls
    first_plain, first_aware = got[False][:2], got[True][:2]  # the first round picks the same untried arms
    for a, b in zip(first_plain, first_aware):
        assert a.arm == b.arm and np.array_equal(a.result.rows, b.result.rows)
        share = float(np.mean(a.result.n_pairs > 0))
        assert share < 1.0  # a pull of 3 consecutive-in-arm rows always holds a document with no pairs here
        assert b.reward == pytest.approx(a.reward * share)
