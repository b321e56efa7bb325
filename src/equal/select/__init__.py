"""Selection as its own layer: arm policies, rewards, environments and one loop with no I/O.

* :mod:`~equal.select.policies`: which arms (clusters) to pull;
* :mod:`~equal.select.rewards`: how good a pull's pairs are;
* :mod:`~equal.select.envs`: pulling documents, live (extract + embed) or from an extraction table;
* :mod:`~equal.select.loop`: the loop, which owns the budget;
* :mod:`~equal.select.recipe`: the choices around it (warm-up, arms, priors, document rankings).
"""

from .envs import Env, LiveEnv, PullResult, ReplayEnv, embed_pairs
from .loop import LoopState, RoundResult, run_loop
from .policies import UCB, ArmPolicy, EpsilonGreedy, Greedy, RoundRobin, Thompson, make_arm_policy
from .rewards import BatchOT, MarginalGain, Reward, SelectedPool, make_reward

__all__ = ["ArmPolicy", "UCB", "Greedy", "EpsilonGreedy", "Thompson", "RoundRobin", "make_arm_policy",
           "Reward", "BatchOT", "MarginalGain", "SelectedPool", "make_reward",
           "Env", "LiveEnv", "ReplayEnv", "PullResult", "embed_pairs", "LoopState", "RoundResult", "run_loop"]
