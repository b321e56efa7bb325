"""The one place that orders EQUAL's recipe, for live runs and replays alike.

:func:`build_selection` walks the steps in order: the similarities each role reads, the warm-up rows, the
warm-up pull, alignment, the arm and prior similarities, clusters (or a document ranking), the arm policy,
its start from the warm-up and the prior, the reward and the pool of selected pairs. What differs between a
live run and a replay is only *how* the steps that touch the world are done (extract or read a table,
checkpoint or not), given as a :class:`Steps` object; :func:`run_selection` then runs the loop. A new recipe
option goes here once and both paths follow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from ..align import AlignExamples, apply_adapter, train_adapter
from ..cluster import kmeans
from . import recipe
from .envs import Env, PullResult
from .loop import LoopState, RoundResult, next_covariate, run_loop
from .policies import ArmStats
from .registry import align_mode, is_ranking, make_policy
from .rewards import Reward, SelectedPool, make_reward


@dataclass
class Warmup:
    """What the warm-up extracted: its corpus rows (in order), the row of each pair, the pairs' vectors."""

    indices: np.ndarray
    pair_doc: np.ndarray
    vectors: np.ndarray
    records: list[dict[str, Any]] = field(default_factory=list)  # the pairs themselves (live runs)

    @classmethod
    def from_pull(cls, rows: np.ndarray, res: PullResult) -> "Warmup":
        return cls(indices=rows, pair_doc=np.repeat(res.rows, res.n_pairs).astype(np.int64), vectors=res.vectors)


@dataclass
class Inputs:
    """What the recipe reads: sizes, vectors and similarities computed before it, and the scorer."""

    cfg: Any  # equal.config.Config
    plan: Any  # equal.sizing.Plan
    base: np.ndarray  # corpus vectors of the base embedder (n, d)
    prior_vecs: np.ndarray  # the reference's prior sample, embedded
    similarity: Callable[[str], np.ndarray]  # kind -> per-document similarity in the base space
    scorer: Any  # equal.score.Scorer (the reward's OT)
    dim: int
    doc_texts: Callable[[], Sequence[str]]  # the corpus texts, for rankings that read text
    ref_texts: Sequence[str]
    doc_lengths: Callable[[np.ndarray], np.ndarray] | None = None  # corpus rows -> text lengths (cost-aware)
    rank_cache: dict | None = None


class Steps(Protocol):
    """How a run does the steps that touch the world (live: extract, checkpoint; replay: a table, in memory)."""

    def warmup(self, rows: np.ndarray) -> Warmup:
        """Extract the warm-up documents at ``rows``."""
        ...

    def align(self, warm: Warmup, mode: str, adapter: Callable[[], np.ndarray]) -> tuple[np.ndarray, Any]:
        """The vectors to cluster and the adapter W applied to them (None: base vectors or a full fine-tune).
        ``adapter()`` trains the InfoNCE adapter on the warm-up (mode ``adapter``)."""
        ...

    def cluster(self, vectors: np.ndarray, compute: Callable[[], Any]) -> np.ndarray:
        """The cluster label of every document (``compute(assign_fn=None)`` makes a
        :class:`~equal.cluster.Clustering`; ``assign_fn`` assigns vectors elsewhere, e.g. on Ray workers)."""
        ...

    def ranking(self, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """A document ranking's order (``compute()`` makes it)."""
        ...

    def start(self, policy: ArmStats, pool: SelectedPool, labels: np.ndarray, warm: Warmup,
              init: Callable[[], dict[str, Any]], fresh: Callable[[], LoopState]) -> LoopState:
        """The loop's starting state: ``init()`` starts the arms from the warm-up and prior, ``fresh()`` is the
        state right after it (a live run that resumes reads its checkpoint instead)."""
        ...


@dataclass
class Selection:
    """Everything the loop needs, built by :func:`build_selection`."""

    policy: ArmStats
    members: list[np.ndarray]
    reward: Reward
    pool: SelectedPool
    state: LoopState
    labels: np.ndarray
    warm: Warmup
    covariate: np.ndarray | None
    cost: Callable[[PullResult], float] | None


# ------------------------------------------------------------------ the recipe
def build_selection(x: Inputs, steps: Steps) -> Selection:
    """Order the recipe: everything between the embedded corpus and the first round of the loop."""
    cfg, plan = x.cfg, x.plan
    sim = x.similarity(cfg.bandit.similarity)
    rows = recipe.warmup_rows(plan.n_docs, plan.warmup_docs, cfg.seed, cfg.align.warmup_sampling,
                              warmup_similarity(cfg, sim, x.similarity), cfg.align.warmup_pool_factor)
    warm = steps.warmup(rows)
    vectors, W = steps.align(warm, align_mode(cfg.policy, cfg.align.mode), lambda: align_adapter(x.base, warm, cfg)[0])
    arm_sim = arm_similarity(cfg, vectors, sim, x.prior_vecs, W)
    prior_sim = prior_similarity(cfg, vectors, arm_sim, x.prior_vecs, W, x.similarity)
    if is_ranking(cfg.policy):
        labels = np.zeros(plan.n_docs, dtype=np.int32)
        steps.cluster(vectors, lambda assign_fn=None: None)  # a ranking has no clusters (one arm); a live run records that
        members = [steps.ranking(lambda: recipe.ranking_order(
            cfg.policy, plan.n_docs, cfg.seed, sim=x.similarity("mean"), doc_vecs=x.base, ref_vecs=x.prior_vecs,
            doc_texts=x.doc_texts, ref_texts=list(x.ref_texts), n=plan.budget_docs, cache=x.rank_cache))]
    else:
        cc = cfg.cluster
        labels = steps.cluster(vectors, lambda assign_fn=None: kmeans(
            vectors, plan.k, cc.niter, cfg.seed, cc.max_points_per_centroid, cc.nredo, assign_fn=assign_fn))
        members = recipe.arm_members(labels, plan.k, warm.indices, cfg.seed, cfg.bandit.in_cluster, arm_sim)
    del vectors
    policy = make_policy(cfg.policy, plan.k, cfg.bandit)
    pool = SelectedPool(x.dim, cfg.bandit.reward_pool, cfg.seed)
    pool.add(warm.vectors)

    def init() -> dict[str, Any]:
        return init_policy(policy, cfg, plan, labels, warm, members, prior_sim, x.scorer)

    def fresh() -> LoopState:
        return LoopState(round=0, docs_used=int(len(warm.indices)), pointers=[0] * len(members),
                         policy=policy.state_dict())

    state = steps.start(policy, pool, labels, warm, init, fresh)
    cost = length_cost(x.doc_lengths, plan.n_docs) if cfg.bandit.cost_aware and x.doc_lengths is not None else None
    if getattr(cfg.bandit, "yield_aware", False):
        cost = yield_cost(cost)
    return Selection(policy=policy, members=members, reward=make_reward(cfg.bandit.reward, x.scorer), pool=pool,
                     state=state, labels=labels, warm=warm, covariate=tracking_covariate(cfg, prior_sim), cost=cost)


def run_selection(sel: Selection, env: Env, cfg: Any, plan: Any,
                  on_round: Callable[[RoundResult, LoopState], None] | None = None,
                  check_stop: Callable[[], None] | None = None) -> LoopState:
    """Run the loop of a built selection until the budget is spent (the same call live and in replay)."""
    return run_loop(sel.policy, env, sel.reward, sel.members, plan.budget_docs, plan.clusters_per_round,
                    plan.docs_per_pull, sel.state, sel.pool, cfg.seed, on_round=on_round, check_stop=check_stop,
                    cost=sel.cost, covariate=sel.covariate)


# ------------------------------------------------------------------ the steps' rules
def warmup_similarity(cfg: Any, sim: np.ndarray, similarity: Callable[[str], np.ndarray]) -> np.ndarray:
    """The similarity that ranks the targeted warm-up's pool: ``align.warmup_similarity`` read in the base space
    by ``similarity(kind)``, or ``sim`` (that of ``bandit.similarity``) where it is None or the same."""
    kind = cfg.align.warmup_similarity
    return sim if kind is None or kind == cfg.bandit.similarity else similarity(kind)


def align_adapter(base: np.ndarray, warm: Warmup, cfg: Any) -> tuple[np.ndarray, dict]:
    """Train the InfoNCE adapter on the warm-up's (document, pair) examples."""
    ex = AlignExamples.from_pair_docs(warm.pair_doc, cfg.align.max_pairs, cfg.seed)
    doc_vecs = np.asarray(base[ex.doc_rows]) if len(ex) else np.zeros((0, base.shape[1]), np.float32)
    local = AlignExamples(doc_rows=np.arange(len(ex)), pair_groups=ex.pair_groups)
    return train_adapter(doc_vecs, warm.vectors, local, cfg.align, cfg.seed, progress=False)


def arm_similarity(cfg: Any, vectors: np.ndarray, base_sim: np.ndarray, prior_vecs: np.ndarray,
                   W: np.ndarray | None) -> np.ndarray:
    """The similarity that orders documents inside arms and sets arm priors: the base one, or (with
    ``bandit.similarity_space: aligned`` and an adapter) cosine in the aligned space, where documents sit
    near the pairs they yield, to the adapter-mapped reference."""
    if cfg.bandit.similarity_space != "aligned" or W is None:
        return base_sim
    return recipe.similarity_scores(vectors, apply_adapter(W)(prior_vecs), cfg.bandit.similarity,
                                    cfg.bandit.similarity_k)


def prior_similarity(cfg: Any, vectors: np.ndarray, arm_sim: np.ndarray, prior_vecs: np.ndarray,
                     W: np.ndarray | None, similarity: Callable[[str], np.ndarray]) -> np.ndarray:
    """The similarity the arm priors read (tracking covariate, similarity prior): ``arm_sim`` unless
    ``bandit.prior_similarity`` names another kind, then that kind where :func:`arm_similarity` measures (the
    aligned space, or the base one through ``similarity(kind)``)."""
    kind = cfg.bandit.prior_similarity
    if kind is None or kind == cfg.bandit.similarity:
        return arm_sim
    if cfg.bandit.similarity_space == "aligned" and W is not None:
        return recipe.similarity_scores(vectors, apply_adapter(W)(prior_vecs), kind, cfg.bandit.similarity_k)
    return similarity(kind)


def tracking_covariate(cfg: Any, sim: np.ndarray | None) -> np.ndarray | None:
    """The per-document covariate the loop feeds a tracking prior (None: no tracking prior)."""
    if is_ranking(cfg.policy) or cfg.bandit.prior != "tracking":
        return None
    return sim


def init_policy(policy: ArmStats, cfg: Any, plan: Any, labels: np.ndarray, warm: Warmup,
                members: list[np.ndarray], sim: np.ndarray, scorer: Any) -> dict[str, Any]:
    """Start the arms from the warm-up (pseudo-pulls with the OT reward of each arm's warm-up pairs)
    and, where configured, from the zero-cost similarity prior."""
    if is_ranking(cfg.policy):
        return {"arms": 0}
    info: dict[str, Any] = {"arms": 0}
    wa = None
    if cfg.bandit.prior == "tracking":
        policy.track(next_covariate(members, np.zeros(len(members)), sim, plan.docs_per_pull),
                     cfg.bandit.prior_pulls)
    if len(warm.indices):
        wa = recipe.warmup_arm_rewards(labels, plan.k, warm.indices, warm.pair_doc, warm.vectors,
                                       scorer.reward, plan.docs_per_pull)
        warm_rows = np.asarray(warm.indices)
        for j in np.flatnonzero(wa.docs):
            x = float(np.mean(sim[warm_rows[labels[warm_rows] == j]]))
            policy.update(int(j), float(wa.reward[j]), pulls=int(wa.pseudo_pulls[j]), x=x)
        info = {"arms": int((wa.docs > 0).sum()), "pseudo_pulls": int(wa.pseudo_pulls.sum())}
    if cfg.bandit.prior == "tracking":
        a, b = policy.calibration()
        info["prior"] = {"kind": "tracking", "a": a, "b": b}
    elif cfg.bandit.prior == "similarity":
        prior = recipe.arm_prior(members, sim, wa, labels, warm.indices, plan.docs_per_pull)
        policy.set_prior(prior, cfg.bandit.prior_pulls)
        info["prior"] = {"min": float(prior.min()), "max": float(prior.max())}
    return info


def yield_share(res: PullResult) -> float:
    """The share of a pull's documents that gave at least one pair (1.0 for an empty pull)."""
    if len(res) == 0:
        return 1.0
    return float(np.mean(np.asarray(res.n_pairs) > 0))


def yield_cost(inner: Callable[[PullResult], float] | None = None) -> Callable[[PullResult], float]:
    """For yield-aware pulls: a cost that divides the reward by ``inner``'s cost and multiplies it by
    :func:`yield_share`. A pull with no pairs has reward 0 whatever its cost."""
    def cost(res: PullResult) -> float:
        share = yield_share(res)
        base = 1.0 if inner is None else float(inner(res))
        return base / share if share > 0 else float("inf")
    return cost


def length_cost(doc_lengths: Callable[[np.ndarray], np.ndarray], n_docs: int, sample: int = 2000):
    """For cost-aware pulls: a pull's mean document length relative to the corpus mean (first ``sample``
    documents). ``doc_lengths(rows)`` gives the text lengths of corpus rows."""
    first = np.asarray(doc_lengths(np.arange(min(n_docs, sample))), dtype=np.float64)
    mean_len = float(np.mean(first))

    def cost(res: PullResult) -> float:
        if len(res) == 0:
            return 1.0
        return float(np.mean(np.asarray(doc_lengths(res.rows), dtype=np.float64))) / mean_len
    return cost
