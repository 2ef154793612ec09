"""The one Pareto module: domination, sorting, the constrained archive, reference point, hypervolume.

Every engine and the report use it: :class:`ConstrainedArchive` (the constrained front of points
added one at a time), :func:`reference_point` ("nadir + 10% of range"), :func:`hypervolume` and
:func:`hv_contributions` (exclusive contributions), the last two through moocore.

Every function works on *minimisation* points (an ``(n, m)`` array); turn ``max`` objectives
into minimisation with :meth:`paretune.objectives.ObjectiveSet.vector` first.

Constrained domination (Deb's rule): a feasible point dominates every infeasible one; between
two infeasible points the smaller total violation dominates; between two feasible points the
usual Pareto domination applies. So "everything infeasible" still yields a first front: the
least-violating points.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import moocore
import numpy as np

REFERENCE_MARGIN = 0.1  # the reference point is the nadir plus this share of the range


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


class ConstrainedArchive:
    """The constrained Pareto archive of the points added so far, one point at a time.

    Members keep their arrival order; each carries a ``key`` (e.g. a row or proposal id). A
    point that is dominated when it arrives is never on a later front (constrained domination
    is transitive), so :meth:`add` answers for good when it says ``False``; a ``True`` may be
    overturned by a later point. Points with equal values are all kept.
    """

    def __init__(self) -> None:
        self._points: np.ndarray | None = None
        self._violations = np.zeros(0)
        self._keys: list[Any] = []

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def keys(self) -> list[Any]:
        """The members' keys in arrival order."""
        return self._keys

    @property
    def points(self) -> np.ndarray:
        """The members' minimisation points, ``(len(self), m)``."""
        return np.zeros((0, 0)) if self._points is None else self._points

    @property
    def violations(self) -> np.ndarray:
        return self._violations

    def feasible_keys(self) -> list[Any]:
        """Keys of the feasible members (none while every point seen violates a limit)."""
        return [k for k, v in zip(self._keys, self._violations, strict=True) if v <= 0]

    def add(
        self, point: Sequence[float] | np.ndarray, violation: float = 0.0, key: Any = None
    ) -> bool:
        """Add a minimisation point; True when no member dominates it (it joins the archive)."""
        p = np.asarray(point, dtype=float)
        v = float(violation)
        if self._points is None or not len(self._keys):
            self._points = p[None, :].copy()
            self._violations = np.array([v])
            self._keys = [key]
            return True
        fp, fv = self._points, self._violations
        if np.any(_dominating(fp, fv, p, v)):
            return False
        keep = ~_dominated_by(p, v, fp, fv)
        self._points = np.vstack([fp[keep], p[None, :]])
        self._violations = np.append(fv[keep], v)
        self._keys = [k for k, kept in zip(self._keys, keep, strict=True) if kept] + [key]
        return True


# The tracker's name for the archive (it only asks whether each new point joins the front).
RunningFront = ConstrainedArchive


def _dominating(fp: np.ndarray, fv: np.ndarray, p: np.ndarray, v: float) -> np.ndarray:
    """Which rows of ``fp`` (violations ``fv``) constrained-dominate the point ``p``."""
    feasible = fv <= 0
    if v <= 0:
        return feasible & np.all(fp <= p, axis=1) & np.any(fp < p, axis=1)
    return feasible | (fv < v)


def _dominated_by(p: np.ndarray, v: float, fp: np.ndarray, fv: np.ndarray) -> np.ndarray:
    """Which rows of ``fp`` are constrained-dominated by the point ``p``."""
    feasible = fv <= 0
    if v <= 0:
        return ~feasible | (np.all(p <= fp, axis=1) & np.any(p < fp, axis=1))
    return ~feasible & (v < fv)


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
    p = np.asarray(points, dtype=float)
    ref = np.asarray(reference, dtype=float)
    if p.size == 0:
        return 0.0
    p = p[np.all(p < ref, axis=1)]
    if len(p) == 0:
        return 0.0
    return float(moocore.hypervolume(p, ref=ref))


def reference_point(points: np.ndarray, margin: float = REFERENCE_MARGIN) -> np.ndarray:
    """The nadir of ``points`` plus ``margin`` times their range, per objective (minimisation).

    An objective without range (one point, or all equal) gets ``margin * max(|nadir|, 1)``:
    a margin in the objective's own scale, never zero.
    """
    p = np.asarray(points, dtype=float)
    lo, hi = p.min(axis=0), p.max(axis=0)
    span = np.where(hi > lo, hi - lo, np.maximum(np.abs(hi), 1.0))
    return hi + margin * span


def hv_contributions(
    points: np.ndarray, reference: np.ndarray, *, shared_duplicates: bool = False
) -> np.ndarray:
    """Exclusive hypervolume contribution of each mutually non-dominated point, via moocore.

    A point's contribution is the hypervolume lost without it, so points with equal values get
    0; with ``shared_duplicates`` each of them gets the contribution of their common value.
    """
    p = np.asarray(points, dtype=float)
    ref = np.asarray(reference, dtype=float)
    if p.ndim == 2 and p.shape[1] == 1:  # one objective (moocore needs two): the best value
        v = p[:, 0]
        best = v == v.min()
        upto = min([float(ref[0])] + [float(x) for x in v[~best]])  # the next value or ref
        lone = best.sum() == 1 or shared_duplicates
        return np.where(best & lone, max(upto - float(v.min()), 0.0), 0.0)
    if not shared_duplicates:
        return np.asarray(moocore.hv_contributions(p, ref=ref), dtype=float)
    uniq, inv = np.unique(p, axis=0, return_inverse=True)
    return np.asarray(moocore.hv_contributions(uniq, ref=ref), dtype=float)[
        np.asarray(inv).reshape(-1)
    ]
