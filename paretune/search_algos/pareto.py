"""Multi-objective bookkeeping: domination, non-dominated sorting, constraints, crowding, hypervolume.

Every function works on *minimisation* points (an ``(n, m)`` array); turn ``max`` objectives
into minimisation with :meth:`paretune.objectives.ObjectiveSet.vector` first.

Constrained domination (Deb's rule): a feasible point dominates every infeasible one; between
two infeasible points the smaller total violation dominates; between two feasible points the
usual Pareto domination applies. So "everything infeasible" still yields a first front: the
least-violating points.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """True when ``a`` is no worse than ``b`` everywhere and better somewhere (minimisation)."""
    return bool(np.all(a <= b) and np.any(a < b))


def constrained_dominates(a: np.ndarray, va: float, b: np.ndarray, vb: float) -> bool:
    """Deb's constrained domination with total violations ``va`` and ``vb`` (0 = feasible)."""
    if va <= 0 and vb <= 0:
        return dominates(a, b)
    if va <= 0 < vb:
        return True
    if vb <= 0 < va:
        return False
    return va < vb


def _domination_matrix(points: np.ndarray, violations: np.ndarray | None) -> np.ndarray:
    """``D[i, j]`` is True when point i (constrained-)dominates point j."""
    p = np.asarray(points, dtype=float)
    le = np.all(p[:, None, :] <= p[None, :, :], axis=2)
    lt = np.any(p[:, None, :] < p[None, :, :], axis=2)
    dom = le & lt
    if violations is None:
        return dom
    v = np.maximum(np.asarray(violations, dtype=float), 0.0)
    feas = v <= 0
    both_feasible = feas[:, None] & feas[None, :]
    i_feasible_only = feas[:, None] & ~feas[None, :]
    both_infeasible = ~feas[:, None] & ~feas[None, :]
    return (both_feasible & dom) | i_feasible_only | (both_infeasible & (v[:, None] < v[None, :]))


def non_dominated_sort(
    points: np.ndarray, violations: Sequence[float] | np.ndarray | None = None
) -> list[np.ndarray]:
    """Fronts of indices, best first (Deb's fast non-dominated sort; constrained if ``violations``)."""
    points = np.asarray(points, dtype=float)
    n = len(points)
    if n == 0:
        return []
    dom = _domination_matrix(
        points, None if violations is None else np.asarray(violations, dtype=float)
    )
    # For every point, how many not-yet-assigned points dominate it.
    remaining = dom.sum(axis=0)
    assigned = np.zeros(n, dtype=bool)
    fronts: list[np.ndarray] = []
    current = np.flatnonzero(remaining == 0)
    while current.size:
        fronts.append(current)
        assigned[current] = True
        remaining = remaining - dom[current].sum(axis=0)
        current = np.flatnonzero((remaining == 0) & ~assigned)
    return fronts


def front_indices(points: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points (minimisation)."""
    fronts = non_dominated_sort(points)
    return fronts[0] if fronts else np.array([], dtype=int)


def constrained_front_indices(
    points: np.ndarray, violations: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Indices of the first front under constrained domination."""
    fronts = non_dominated_sort(points, violations)
    return fronts[0] if fronts else np.array([], dtype=int)


class RunningFront:
    """The constrained Pareto front of the points seen so far, one point at a time.

    A point that is dominated when it arrives is never on a later front (constrained
    domination is transitive), so :meth:`add` answers for good when it says ``False``; a
    ``True`` may be overturned by a later point.
    """

    def __init__(self) -> None:
        self._points: list[np.ndarray] = []
        self._violations: list[float] = []

    def __len__(self) -> int:
        return len(self._points)

    def add(self, point: Sequence[float] | np.ndarray, violation: float = 0.0) -> bool:
        """Add a minimisation point; True when no point seen so far dominates it."""
        p = np.asarray(point, dtype=float)
        v = float(violation)
        for q, vq in zip(self._points, self._violations, strict=True):
            if constrained_dominates(q, vq, p, v):
                return False
        keep = [
            i
            for i, (q, vq) in enumerate(zip(self._points, self._violations, strict=True))
            if not constrained_dominates(p, v, q, vq)
        ]
        self._points = [self._points[i] for i in keep] + [p]
        self._violations = [self._violations[i] for i in keep] + [v]
        return True


def ranks(points: np.ndarray, violations: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
    """The front number (0 = best) of every point."""
    out = np.zeros(len(points), dtype=int)
    for k, f in enumerate(non_dominated_sort(points, violations)):
        out[f] = k
    return out


def crowding_distance(points: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of each point within its set (boundary points get ``inf``)."""
    p = np.asarray(points, dtype=float)
    n, m = p.shape if p.ndim == 2 else (len(p), 0)
    dist = np.zeros(n)
    if n <= 2:
        dist[:] = np.inf
        return dist
    for j in range(m):
        order = np.argsort(p[:, j], kind="stable")
        span = p[order[-1], j] - p[order[0], j]
        dist[order[0]] = dist[order[-1]] = np.inf
        if span <= 0:
            continue
        dist[order[1:-1]] += (p[order[2:], j] - p[order[:-2], j]) / span
    return dist


def hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Hypervolume dominated by ``points`` up to ``reference`` (minimisation), via moocore.

    Points that do not strictly dominate the reference contribute nothing.
    """
    import moocore

    p = np.asarray(points, dtype=float)
    ref = np.asarray(reference, dtype=float)
    if p.size == 0:
        return 0.0
    p = p[np.all(p < ref, axis=1)]
    if len(p) == 0:
        return 0.0
    return float(moocore.hypervolume(p, ref=ref))
