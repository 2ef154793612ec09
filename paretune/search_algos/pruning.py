"""Zero-shot pruning: from scores of sampled architectures to fewer options per decision.

Numpy only. The steps (Rumiantsev & Coates 2025 as specified in ``algorithms.md`` §5.3):

1. ``N`` architectures are sampled uniformly and scored (a zero-cost proxy, higher is better;
   several proxies are combined by their mean normalised rank, :func:`combined_rank`).
2. **Option fitness** (:func:`option_scores`): every architecture gets its normalised rank
   ``r in [0, 1]`` (1: the best of the sample, ties averaged); an option's fitness is the mean
   ``r`` of the sampled architectures that use it on that decision. An option no sample used has
   no fitness (``nan``) and is never removed.
3. **Rule** (:func:`prune`), per decision with ``n`` allowed options, ``floor(ratio * n)`` are
   removed, and at least one option always stays:

   * ``proxy``: the options of lowest fitness are removed.
   * ``front``: options used by an architecture of the non-dominated set of the sample under
     (proxy: max, cost: min, e.g. params) are *protected*: the quota is taken from the others,
     lowest fitness first (fewer are removed when too few are unprotected). This keeps the
     options the cheap end of a multi-objective front needs, which a plain proxy (correlated
     with size) tends to remove.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from paretune.search_algos.pareto import front_indices
from paretune.spaces.base import Arch, SearchSpace

RULES = ("proxy", "front")


def normalised_rank(scores: Sequence[float]) -> np.ndarray:
    """Each score's rank in [0, 1] (1: the highest; ties share their mean rank; nan: 0)."""
    s = np.asarray(scores, dtype=float)
    n = len(s)
    if n == 0:
        return s
    s = np.where(np.isfinite(s), s, -np.inf)
    order = np.argsort(s, kind="stable")
    ranks = np.empty(n, dtype=float)
    ranks[order] = np.arange(n, dtype=float)
    for value in np.unique(s):  # average ties
        tied = s == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks / max(n - 1, 1)


def combined_rank(columns: Sequence[Sequence[float]]) -> np.ndarray:
    """The mean normalised rank of several score columns (each higher-is-better)."""
    if not columns:
        raise ValueError("combined_rank: no score column")
    return np.mean([normalised_rank(c) for c in columns], axis=0)


def option_scores(
    space: SearchSpace, archs: Sequence[Arch], scores: Sequence[float]
) -> list[dict[int, float]]:
    """Per decision, ``{option index: mean normalised rank of the archs using it}`` for every
    allowed option (``nan`` when no sampled architecture uses it)."""
    if len(archs) != len(scores):
        raise ValueError(f"{len(archs)} architectures but {len(scores)} scores")
    r = normalised_rank(scores)
    a = np.asarray(archs, dtype=int).reshape(len(archs), space.num_decisions)
    out: list[dict[int, float]] = []
    for k, allowed in enumerate(space.allowed):
        fitness = {}
        for option in allowed:
            used = a[:, k] == option
            fitness[option] = float(r[used].mean()) if used.any() else math.nan
        out.append(fitness)
    return out


def protected_options(
    space: SearchSpace,
    archs: Sequence[Arch],
    scores: Sequence[float],
    costs: Sequence[float],
) -> list[set[int]]:
    """Per decision, the options used by the non-dominated samples of (score: max, cost: min)."""
    points = np.column_stack([-np.asarray(scores, dtype=float), np.asarray(costs, dtype=float)])
    points = np.where(np.isfinite(points), points, np.inf)
    front = front_indices(points)
    out: list[set[int]] = [set() for _ in range(space.num_decisions)]
    for i in front:
        for k, option in enumerate(archs[int(i)]):
            out[k].add(int(option))
    return out


@dataclass
class PruneResult:
    """What pruning kept and removed, per decision (option indices of the full space)."""

    allowed: list[list[int]]
    removed: list[list[int]]
    fitness: list[dict[int, float]]
    protected: list[set[int]] = field(default_factory=list)

    def removed_names(self, space: SearchSpace) -> dict[str, list[str]]:
        """``{decision: [removed option names]}`` for decisions that lost options."""
        return {
            d.name: [d.options[i] for i in rem]
            for d, rem in zip(space.decisions, self.removed, strict=True)
            if rem
        }

    def kept_names(self, space: SearchSpace) -> dict[str, list[str]]:
        return {
            d.name: [d.options[i] for i in keep]
            for d, keep in zip(space.decisions, self.allowed, strict=True)
        }


def select_decisions(space: SearchSpace, patterns: str | Sequence[str] | None) -> list[int]:
    """Indices of the decisions whose names match any glob of ``patterns`` (``None``: all)."""
    from fnmatch import fnmatchcase

    if patterns is None:
        return list(range(space.num_decisions))
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    out = [
        k for k, d in enumerate(space.decisions) if any(fnmatchcase(d.name, p) for p in patterns)
    ]
    if not out:
        names = space.decision_names()
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        raise ValueError(
            f"prune.decisions = {patterns!r}: matches no decision of space {space.name!r} "
            f"(decisions: {shown})"
        )
    return out


def check_ratio(ratio: float) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio < 1:
        raise ValueError(f"prune.ratio = {ratio!r}: must be a number in [0, 1)")
    return float(ratio)


def prune(
    space: SearchSpace,
    archs: Sequence[Arch],
    scores: Sequence[float],
    ratio: float = 0.5,
    rule: str = "proxy",
    costs: Sequence[float] | None = None,
    decisions: Sequence[int] | None = None,
) -> PruneResult:
    """Which options to keep per decision (see the module docstring).

    Args:
        space: the space the samples come from (its allowed options are pruned).
        archs: the sampled architectures.
        scores: one score per architecture, higher is better.
        ratio: share of each decision's options to remove (floor), in [0, 1).
        rule: ``proxy`` or ``front``.
        costs: one cost per architecture (lower is better), needed by ``front``.
        decisions: indices of the decisions to prune (default: all); e.g. only the operation
            decisions of a DARTS cell, not its input choices.
    """
    ratio = check_ratio(ratio)
    if rule not in RULES:
        raise ValueError(f"prune.rule = {rule!r}: unknown rule (allowed: {', '.join(RULES)})")
    if not len(archs):
        raise ValueError("prune: no sampled architecture to score")
    fitness = option_scores(space, archs, scores)
    protected: list[set[int]] = [set() for _ in range(space.num_decisions)]
    if rule == "front":
        if costs is None or len(costs) != len(archs):
            raise ValueError("prune.rule = 'front': needs one cost per sampled architecture")
        protected = protected_options(space, archs, scores, costs)
    allowed: list[list[int]] = []
    removed: list[list[int]] = []
    chosen = set(range(space.num_decisions) if decisions is None else decisions)
    for k, options in enumerate(space.allowed):
        quota = min(int(math.floor(ratio * len(options))), len(options) - 1)
        if k not in chosen:
            quota = 0
        candidates = [o for o in options if o not in protected[k] and not math.isnan(fitness[k][o])]
        candidates.sort(key=lambda o: (fitness[k][o], o))
        drop = sorted(candidates[:quota])
        removed.append(drop)
        allowed.append([o for o in options if o not in drop])
    return PruneResult(allowed, removed, fitness, protected)


def random_prune(
    space: SearchSpace,
    ratio: float,
    rng: np.random.Generator,
    decisions: Sequence[int] | None = None,
) -> list[list[int]]:
    """A baseline: the same number of options per decision removed at random."""
    ratio = check_ratio(ratio)
    chosen = set(range(space.num_decisions) if decisions is None else decisions)
    out = []
    for k, options in enumerate(space.allowed):
        quota = min(int(math.floor(ratio * len(options))), len(options) - 1) if k in chosen else 0
        drop = set(rng.choice(options, size=quota, replace=False).tolist()) if quota else set()
        out.append([o for o in options if o not in drop])
    return out
