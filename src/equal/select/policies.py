"""Arm policies: which clusters to pull next.

An arm policy keeps per-arm statistics and answers three questions: which
arms to pull (:meth:`choose`), what it learnt from a pull (:meth:`update`)
and how it ranks arms now (:meth:`scores`). It never does I/O, never sees the
budget, and carries its whole state in :meth:`state_dict` (plain lists, so
that a checkpoint can hold it). Randomised policies take the ``rng`` the loop
passes to ``choose``; the loop derives it from the seed and the round number,
so that resuming needs no generator state.

Arms may start from a *prior* (:meth:`set_prior`): a mean and a weight in
pseudo-pulls, e.g. from the similarity of an arm's documents to the reference
(zero extraction cost). Real pulls add to it; the prior is kept apart so that
``pulls`` counts real pulls only.

A *tracking* prior (:meth:`track`) follows a covariate instead: each round the
loop gives every arm the similarity ``x`` of the documents its next pull would
take, and every pull reports the ``x`` of the documents it took. The arm's mean
is then a line fitted on all pulls so far, ``a + b * x_next``, plus the arm's
own residual (its rewards minus what the line predicted for them), shrunk by
the prior weight: ``mean_j = a + b x_next_j + sum_j (r - a - b x) / (T_j + w)``.
What the rewards teach about one cluster stays with it, what they teach about
similarity in general moves every arm, and an arm's value falls as its best
documents are taken.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class ArmPolicy(Protocol):
    name: str
    k: int

    def choose(self, n: int, available: np.ndarray, rng: np.random.Generator) -> list[int]:
        """Up to ``n`` distinct arms among those where ``available`` is True, best first."""
        ...

    def update(self, arm: int, reward: float, pulls: int = 1, x: float | None = None) -> None:
        """Record ``pulls`` pulls of ``arm`` with mean ``reward`` (``x``: their covariate, for a tracking prior)."""
        ...

    def scores(self) -> np.ndarray:
        """The per-arm value the policy ranks by now (+inf: must be tried)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ...


class ArmStats:
    """Pulls and reward sums per arm, with an optional prior (mean, weight in pseudo-pulls)."""

    name = "stats"

    @classmethod
    def from_config(cls, k: int, bandit: Any) -> "ArmStats":  # noqa: ARG003 - options unused here
        """Build the policy over ``k`` arms from the ``bandit`` config section (override to read options)."""
        return cls(k)

    def __init__(self, k: int) -> None:
        self.k = int(k)
        self.pulls = np.zeros(self.k, dtype=np.int64)
        self.sums = np.zeros(self.k, dtype=np.float64)
        self.prior_mean = np.zeros(self.k, dtype=np.float64)
        self.prior_weight = np.zeros(self.k, dtype=np.float64)
        self.tracking = False
        self.x_next = np.zeros(self.k, dtype=np.float64)  # covariate of each arm's next pull
        self.x_sums = np.zeros(self.k, dtype=np.float64)  # sum of x over an arm's pulls
        self.fit_stats = np.zeros(5, dtype=np.float64)  # over all pulls: n, sum x, sum r, sum x^2, sum x r

    def track(self, x_next: np.ndarray, weight: float) -> None:
        """Use a tracking prior worth ``weight`` pulls; ``x_next`` is each arm's covariate now."""
        self.tracking = True
        self.prior_weight = np.full(self.k, float(weight))
        self.set_next(x_next)

    def set_next(self, x_next: np.ndarray) -> None:
        """The covariate of each arm's next pull (the loop calls this every round)."""
        self.x_next = np.asarray(x_next, dtype=np.float64).copy()

    def calibration(self) -> tuple[float, float]:
        """(a, b) of the least-squares line reward ~ a + b x over all pulls; (0, 1) until three pulls
        with distinct x; a shift with slope 1 when the fitted slope is not positive."""
        n, sx, sr, sxx, sxr = self.fit_stats
        if n < 3:
            return 0.0, 1.0
        var = sxx / n - (sx / n) ** 2
        if var <= 1e-12:
            return sr / n - sx / n, 1.0
        b = (sxr / n - (sx / n) * (sr / n)) / var
        if b <= 0:
            return sr / n - sx / n, 1.0
        return sr / n - b * sx / n, b

    def set_prior(self, mean: np.ndarray, weight: float | np.ndarray) -> None:
        """Start each arm from ``mean`` worth ``weight`` pulls (0 = no prior)."""
        self.prior_mean = np.asarray(mean, dtype=np.float64).copy()
        self.prior_weight = np.broadcast_to(np.asarray(weight, dtype=np.float64), (self.k,)).copy()

    def update(self, arm: int, reward: float, pulls: int = 1, x: float | None = None) -> None:
        """Record ``pulls`` pulls of ``arm`` with mean ``reward``; ``x``: the covariate of the documents
        pulled (needed by a tracking prior, ignored otherwise)."""
        self.pulls[arm] += pulls
        self.sums[arm] += float(reward) * pulls
        if self.tracking:
            if x is None:
                raise ValueError("a tracking prior needs the covariate x of every pull")
            x, r = float(x), float(reward)
            self.x_sums[arm] += x * pulls
            self.fit_stats += pulls * np.array([1.0, x, r, x * x, x * r])

    def counts(self) -> np.ndarray:
        """Real pulls plus prior pseudo-pulls."""
        return self.pulls + self.prior_weight

    def means(self) -> np.ndarray:
        """Posterior mean reward (prior included); nan for an arm with neither pulls nor prior."""
        n = self.counts()
        if self.tracking:
            a, b = self.calibration()
            residual = self.sums - a * self.pulls - b * self.x_sums
            with np.errstate(invalid="ignore", divide="ignore"):
                return a + b * self.x_next + np.where(n > 0, residual / np.where(n > 0, n, 1), 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, (self.sums + self.prior_mean * self.prior_weight) / np.where(n > 0, n, 1), np.nan)

    def state_dict(self) -> dict[str, Any]:
        out = {"pulls": self.pulls.tolist(), "sums": self.sums.tolist(),
               "prior_mean": self.prior_mean.tolist(), "prior_weight": self.prior_weight.tolist()}
        if self.tracking:
            out["tracking"] = {"x_next": self.x_next.tolist(), "x_sums": self.x_sums.tolist(),
                               "fit_stats": self.fit_stats.tolist()}
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pulls = np.asarray(state["pulls"], dtype=np.int64)
        self.sums = np.asarray(state["sums"], dtype=np.float64)
        self.k = len(self.pulls)
        self.prior_mean = np.asarray(state.get("prior_mean", np.zeros(self.k)), dtype=np.float64)
        self.prior_weight = np.asarray(state.get("prior_weight", np.zeros(self.k)), dtype=np.float64)
        tr = state.get("tracking")
        self.tracking = tr is not None
        self.x_next = np.asarray(tr["x_next"] if tr else np.zeros(self.k), dtype=np.float64)
        self.x_sums = np.asarray(tr["x_sums"] if tr else np.zeros(self.k), dtype=np.float64)
        self.fit_stats = np.asarray(tr["fit_stats"] if tr else np.zeros(5), dtype=np.float64)

    # ranking helper shared by the deterministic policies
    def _top(self, s: np.ndarray, n: int, available: np.ndarray) -> list[int]:
        s = np.where(available, s, -np.inf)
        order = np.argsort(-s, kind="stable")  # ties: lower arm index first
        return [int(j) for j in order[:n] if available[j]]

    def choose(self, n: int, available: np.ndarray, rng: np.random.Generator) -> list[int]:  # noqa: ARG002
        return self._top(self.scores(), n, available)

    def scores(self) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError


class UCB(ArmStats):
    """EQUAL's Document Sampling score: DS_j = mean_j + alpha * sqrt(2 ln(sum_i T_i) / T_j).

    An arm with neither pulls nor prior scores +inf. ``schedule="paper"`` uses
    alpha = 1 / (sum T + 1) as the paper writes; ``"constant"`` keeps ``alpha``
    fixed as the authors' code does. T counts prior pseudo-pulls too.
    """

    name = "ucb"

    def __init__(self, k: int, alpha: float = 0.02, schedule: str = "constant") -> None:
        super().__init__(k)
        self.alpha = float(alpha)
        self.schedule = schedule

    @classmethod
    def from_config(cls, k: int, bandit: Any) -> "UCB":
        return cls(k, bandit.alpha, bandit.alpha_schedule)

    def current_alpha(self) -> float:
        if self.schedule == "paper":
            return 1.0 / (float(self.counts().sum()) + 1.0)
        return self.alpha

    def scores(self) -> np.ndarray:
        n = self.counts()
        total = float(n.sum())
        log_total = np.log(total) if total > 1 else 0.0
        with np.errstate(invalid="ignore", divide="ignore"):
            bonus = self.current_alpha() * np.sqrt(2.0 * log_total / n)
            s = self.means() + bonus
        return np.where(n > 0, s, np.inf)


class Greedy(ArmStats):
    """Always the best mean so far; untried arms (no pulls, no prior) first."""

    name = "greedy"

    def scores(self) -> np.ndarray:
        m = self.means()
        return np.where(np.isnan(m), np.inf, m)


class EpsilonGreedy(Greedy):
    """Greedy, except that each slot goes to a uniformly random available arm with probability ``epsilon``."""

    name = "epsilon-greedy"

    def __init__(self, k: int, epsilon: float = 0.1) -> None:
        super().__init__(k)
        self.epsilon = float(epsilon)

    @classmethod
    def from_config(cls, k: int, bandit: Any) -> "EpsilonGreedy":
        return cls(k, bandit.epsilon)

    def choose(self, n: int, available: np.ndarray, rng: np.random.Generator) -> list[int]:
        greedy = self._top(self.scores(), int(available.sum()), available)
        out: list[int] = []
        for _ in range(min(n, len(greedy))):
            rest = [a for a in greedy if a not in out]
            if rng.random() < self.epsilon:
                out.append(int(rest[int(rng.integers(len(rest)))]))
            else:
                out.append(rest[0])
        return out


class Thompson(ArmStats):
    """Gaussian Thompson sampling: draw mean_j + sigma / sqrt(T_j + 1) * z per arm, take the best draws.

    Untried arms draw from N(prior or the mean of tried arms, sigma).
    """

    name = "thompson"

    def __init__(self, k: int, sigma: float = 0.05) -> None:
        super().__init__(k)
        self.sigma = float(sigma)
        self._last: np.ndarray | None = None

    @classmethod
    def from_config(cls, k: int, bandit: Any) -> "Thompson":
        return cls(k, bandit.thompson_sigma)

    def _centre(self) -> np.ndarray:
        m = self.means()
        fill = float(np.nanmean(m)) if np.isfinite(m).any() else 0.5
        return np.where(np.isnan(m), fill, m)

    def scores(self) -> np.ndarray:
        return self._centre()

    def choose(self, n: int, available: np.ndarray, rng: np.random.Generator) -> list[int]:
        draw = self._centre() + self.sigma / np.sqrt(self.counts() + 1.0) * rng.standard_normal(self.k)
        return self._top(draw, n, available)


class RoundRobin(ArmStats):
    """Uniform over clusters: the arms with the fewest pulls first (ties: lower index)."""

    name = "uniform-clusters"

    def scores(self) -> np.ndarray:
        return -self.pulls.astype(np.float64)


class SingleArm(ArmStats):
    """One arm holding a ranked list of documents: the loop walks down a document ranking."""

    name = "ranking"

    def __init__(self, k: int = 1) -> None:
        super().__init__(k)

    def scores(self) -> np.ndarray:
        return np.zeros(self.k)


ARM_POLICIES = {"ucb": UCB, "greedy": Greedy, "epsilon-greedy": EpsilonGreedy, "thompson": Thompson,
                "uniform-clusters": RoundRobin, "ranking": SingleArm}


def make_arm_policy(name: str, k: int, *, alpha: float = 0.02, schedule: str = "constant",
                    epsilon: float = 0.1, sigma: float = 0.05) -> ArmStats:
    """Build the arm policy called ``name`` over ``k`` arms."""
    if name == "ucb":
        return UCB(k, alpha, schedule)
    if name == "epsilon-greedy":
        return EpsilonGreedy(k, epsilon)
    if name == "thompson":
        return Thompson(k, sigma)
    if name in ARM_POLICIES:
        return ARM_POLICIES[name](k)
    raise ValueError(f"unknown arm policy: {name} (choose from {', '.join(ARM_POLICIES)})")
