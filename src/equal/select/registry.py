"""The strategies a run can name (``policy`` in the config), registered in one place.

A *bandit* strategy is an arm policy class (:class:`~equal.select.policies.ArmStats` subclass) with a
``from_config(k, bandit)`` class method, registered under a name::

    from equal.select.registry import register_policy

    @register_policy("my-bandit")
    class MyBandit(ArmStats):
        @classmethod
        def from_config(cls, k, bandit):
            return cls(k)
        def scores(self):
            ...

Registering is all it takes: ``equal run --policy my-bandit`` and ``equal compare --policies my-bandit`` then
run it through the same recipe (:mod:`equal.select.setup`), live and in replay. *Rankings* (``random``,
``avg-sim``, ``classifier``-style document orders) walk one arm in rank order; they are listed in
:data:`RANKINGS` and computed by :func:`equal.select.recipe.ranking_order`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

RANKINGS = ("random", "avg-sim", "classifier", "tsds", "dsir", "full")


@dataclass(frozen=True)
class Strategy:
    name: str
    factory: Callable[[int, Any], Any]  # (k, bandit config) -> an arm policy
    align: bool = True  # False: the strategy never aligns (equal-no-align)


_BANDITS: dict[str, Strategy] = {}


def register_policy(name: str, *, align: bool = True):
    """Class decorator: register an arm policy class (with ``from_config(k, bandit)``) as strategy ``name``."""
    def deco(cls):
        _builtins()
        if name in RANKINGS:
            raise ValueError(f"{name!r} is a document ranking")
        _BANDITS[name] = Strategy(name, cls.from_config, align)
        return cls
    return deco


def unregister_policy(name: str) -> None:
    _BANDITS.pop(name, None)


def _builtins() -> None:
    if not _BANDITS:  # the built-in bandits, in the order `equal compare --policies all` runs them
        from .policies import UCB, EpsilonGreedy, Greedy, RoundRobin, Thompson

        for name, cls, align in (("equal", UCB, True), ("equal-no-align", UCB, False), ("greedy", Greedy, True),
                                 ("epsilon-greedy", EpsilonGreedy, True), ("thompson", Thompson, True),
                                 ("uniform-clusters", RoundRobin, True)):
            _BANDITS[name] = Strategy(name, cls.from_config, align)


def bandits() -> tuple[str, ...]:
    _builtins()
    return tuple(_BANDITS)


def strategies() -> tuple[str, ...]:
    """Every strategy name: the bandits in registration order, then the rankings."""
    return bandits() + RANKINGS


def is_ranking(policy: str) -> bool:
    return policy in RANKINGS


def align_mode(policy: str, mode: str) -> str:
    """The alignment a run of ``policy`` really does: ``none`` for document rankings and strategies registered
    with ``align=False`` (``equal-no-align``), else ``align.mode`` (a run without warm-up pairs then skips it)."""
    if is_ranking(policy):
        return "none"
    _builtins()
    s = _BANDITS.get(policy)
    return mode if s is None or s.align else "none"


def check_policy(policy: str) -> None:
    """A clear error for a strategy name that is not registered."""
    from ..errors import UserError

    if policy not in strategies():
        raise UserError(f"unknown policy {policy!r}; choose from {', '.join(strategies())}")


def make_policy(policy: str, k: int, bandit: Any):
    """The arm policy of strategy ``policy`` over ``k`` arms (a single ranked arm for a ranking)."""
    if is_ranking(policy):
        from .policies import SingleArm

        return SingleArm(1)
    check_policy(policy)
    return _BANDITS[policy].factory(k, bandit)
