"""The selection loop: choose arms, pull documents, reward, update; no file I/O.

The loop owns the budget. The caller owns files: after every round it calls
``on_round(result, state)``, where a live pipeline appends its journals and
commits a checkpoint holding ``state``; resuming passes that state back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .envs import Env, PullResult
from .policies import ArmStats
from .rewards import Reward, SelectedPool


@dataclass
class LoopState:
    """Everything the loop needs to continue: round number, documents used, per-arm pointers, policy state."""

    round: int = 0
    docs_used: int = 0
    pointers: list[int] = field(default_factory=list)
    policy: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"round": self.round, "docs_used": self.docs_used, "pointers": list(self.pointers),
                "policy": self.policy}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LoopState":
        return cls(round=int(d["round"]), docs_used=int(d["docs_used"]), pointers=list(d["pointers"]),
                   policy=d.get("policy", {}))


@dataclass
class ArmPull:
    """One arm's share of a round."""

    arm: int
    result: PullResult
    reward: float
    score: float | None  # the policy's score for the arm when it was chosen (None: +inf, never tried)
    pulls: int  # the arm's real pulls after this one


@dataclass
class RoundResult:
    round: int
    pulls: list[ArmPull]

    @property
    def docs(self) -> int:
        return sum(len(p.result) for p in self.pulls)


def round_rng(seed: int, round_no: int) -> np.random.Generator:
    """The generator a randomised policy gets in round ``round_no`` (no state to save)."""
    return np.random.default_rng([seed, 0x5E1EC7, round_no])


def next_covariate(arms: list[np.ndarray], pointers, covariate: np.ndarray, docs_per_pull: int) -> np.ndarray:
    """Per arm, the mean covariate of the documents its next pull would take (0 for an exhausted arm)."""
    out = np.zeros(len(arms), dtype=np.float64)
    for j, (rows, p) in enumerate(zip(arms, pointers)):
        nxt = rows[int(p): int(p) + docs_per_pull]
        if len(nxt):
            out[j] = float(np.mean(covariate[nxt]))
    return out


def run_loop(policy: ArmStats, env: Env, reward: Reward, arms: list[np.ndarray], budget: int,
             clusters_per_round: int, docs_per_pull: int, state: LoopState, pool: SelectedPool, seed: int = 0,
             on_round: Callable[[RoundResult, LoopState], None] | None = None,
             check_stop: Callable[[], None] | None = None,
             cost: Callable[[PullResult], float] | None = None,
             covariate: np.ndarray | None = None) -> LoopState:
    """Pull until ``state.docs_used`` reaches ``budget`` or every arm is exhausted.

    ``arms[j]`` lists arm ``j``'s documents (corpus rows) in the order pulls take
    them; ``state.pointers[j]`` is how many are taken. ``cost`` (optional)
    divides each reward, for cost-aware pulls. ``covariate`` (one value per
    corpus row, e.g. similarity to the reference) feeds a tracking prior: each
    round every arm gets the mean covariate of the documents its next pull would
    take (derived from the pointers, so resuming needs nothing more), and each
    pull reports the mean covariate of the documents it took. Returns the final
    state (also passed to ``on_round`` after every round).
    """
    sizes = arms.sizes() if hasattr(arms, "sizes") else np.array([len(a) for a in arms], dtype=np.int64)
    pointers = np.asarray(state.pointers if state.pointers else np.zeros(len(arms)), dtype=np.int64)
    if state.policy:
        policy.load_state_dict(state.policy)
    while state.docs_used < budget:
        if check_stop is not None:
            check_stop()
        available = pointers < sizes
        if not available.any():
            break
        round_no = state.round + 1
        if covariate is not None:
            policy.set_next(next_covariate(arms, pointers, covariate, docs_per_pull))
        scores = policy.scores()
        chosen = policy.choose(clusters_per_round, available, round_rng(seed, round_no))
        remaining = budget - state.docs_used
        picks: list[tuple[int, np.ndarray]] = []
        for arm in chosen:
            take = int(min(docs_per_pull, remaining, sizes[arm] - pointers[arm]))
            if take <= 0:
                break
            picks.append((arm, arms[arm][pointers[arm]: pointers[arm] + take]))
            remaining -= take
        if not picks:
            break
        res = env.pull(np.concatenate([rows for _, rows in picks]))
        pulls: list[ArmPull] = []
        off = 0
        for arm, rows in picks:
            part = res.take(off, off + len(rows))
            off += len(rows)
            r = float(reward(part.vectors, pool))
            if cost is not None:
                r = r / max(cost(part), 1e-9)
            policy.update(arm, r, x=None if covariate is None else float(np.mean(covariate[rows])))
            pointers[arm] += len(rows)
            s = float(scores[arm])
            pulls.append(ArmPull(arm=arm, result=part, reward=r, score=s if math.isfinite(s) else None,
                                 pulls=int(policy.pulls[arm])))
        pool.add(res.vectors)
        state = LoopState(round=round_no, docs_used=state.docs_used + len(res), pointers=pointers.tolist(),
                          policy=policy.state_dict())
        if on_round is not None:
            on_round(RoundResult(round_no, pulls), state)
    return state
