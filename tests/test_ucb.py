import math

import numpy as np

from equal.policies import UCB


def test_scores_match_hand_computed_values():
    p = UCB(3, alpha=0.5)
    p.update(0, 0.6)
    p.update(0, 0.4)  # T0=2, mean 0.5
    p.update(1, 0.9)  # T1=1, mean 0.9
    s = p.scores()
    total = 3
    assert math.isclose(s[0], 0.5 + 0.5 * math.sqrt(2 * math.log(total) / 2), rel_tol=1e-12)
    assert math.isclose(s[1], 0.9 + 0.5 * math.sqrt(2 * math.log(total) / 1), rel_tol=1e-12)
    assert s[2] == math.inf  # never pulled: above every pulled arm


def test_paper_schedule_alpha_is_one_over_total_plus_one():
    p = UCB(2, alpha=123.0, schedule="paper")
    p.update(0, 0.2, pulls=3)
    p.update(1, 0.1)
    assert math.isclose(p.current_alpha(), 1 / 5)
    s = p.scores()
    assert math.isclose(s[1], 0.1 + 0.2 * math.sqrt(2 * math.log(4) / 1))


def test_never_pulled_arm_chosen_first_and_exhausted_never_chosen():
    p = UCB(4, alpha=0.01)
    for arm, r in [(0, 0.9), (1, 0.1), (2, 0.5)]:
        p.update(arm, r)
    available = np.array([True, True, True, True])
    assert p.choose(2, available) == [3, 0]
    available[3] = False
    available[0] = False
    assert p.choose(2, available) == [2, 1]
    assert p.choose(5, np.array([False, False, True, False])) == [2]
    assert p.choose(3, np.zeros(4, dtype=bool)) == []


def test_pseudo_pulls_weigh_the_mean():
    p = UCB(1)
    p.update(0, 0.8, pulls=3)
    p.update(0, 0.0)
    assert math.isclose(p.means()[0], 0.6)
    assert p.pulls[0] == 4


def test_state_round_trips_exactly():
    p = UCB(3, alpha=0.1)
    p.update(1, 1 / 3)
    q = UCB(3, alpha=0.1)
    q.load_state(p.state())
    assert np.array_equal(p.scores(), q.scores())
