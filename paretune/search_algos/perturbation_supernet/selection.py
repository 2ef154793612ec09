"""PertNAS's selections on valuation matrices, extended to several objectives (pure numpy).

A *valuation* ``delta[j][e, k]`` is ``metric_j(network without option k on edge e) -
metric_j(network with it)`` (``algorithms.md`` section 1.4; the authors' ``perturb_val``).
With accuracy alone, the authors keep the options whose removal hurts most: the most negative
``delta`` (``np.argsort(v)[:2]`` in ``coarse_grained_op_select``, ``[:1]`` in
``fine_grained_op_select``, the two smallest ``min`` over an edge's row in ``discretize_node``).

Several objectives (this package's extension): each *lineage* carries trade-off weights
``w_j >= 0`` and scores an option by its *importance*

    I(e, k) = sum_j w_j * s_j * delta_j[e, k] / scale_j,   s_j = -1 (max) or +1 (min),

so that removing an option that lowers accuracy (delta < 0) makes it important, and removing
one that lowers a cost (delta < 0) makes it unimportant. ``scale_j`` (the mean absolute value
of objective j's valuations in the population matrix) makes the weights comparable. With the
weights ``{accuracy: 1}`` the importance is ``-delta_accuracy`` and every selection is the
authors'. Options are kept by descending importance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# The authors' fine-selection edge order over DARTS's 14 edges (search_evolutionary.py).
DARTS_FINE_ORDER: tuple[int, ...] = (13, 12, 8, 11, 7, 4, 9, 10, 5, 6, 2, 3, 0, 1)
# DARTS's intermediate nodes 2..5 and the (first, end) edge indices of their inputs.
DARTS_NODE_EDGES: dict[int, tuple[int, int]] = {2: (0, 2), 3: (2, 5), 4: (5, 9), 5: (9, 14)}


def fine_order(num_edges: int) -> list[int]:
    """The edge order of the fine selection: the authors' order on DARTS's 14 edges; for
    other cells (NB201's 6) the last edge first, as the authors' order starts at the last node."""
    if num_edges == len(DARTS_FINE_ORDER):
        return list(DARTS_FINE_ORDER)
    return list(range(num_edges - 1, -1, -1))


def scales(deltas: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Per objective, the mean absolute finite valuation (1 when there is none or all are 0)."""
    out = {}
    for name, d in deltas.items():
        a = np.abs(np.asarray(d, dtype=float))
        a = a[np.isfinite(a) & (a > 0)]
        out[name] = float(a.mean()) if a.size else 1.0
    return out


def importance(
    deltas: Mapping[str, np.ndarray],
    weights: Mapping[str, float],
    directions: Mapping[str, str],
    scale: Mapping[str, float],
) -> np.ndarray:
    """``I = sum_j w_j s_j delta_j / scale_j`` (NaN where a weighted objective has no value)."""
    total: np.ndarray | None = None
    for name, w in weights.items():
        if w == 0:
            continue
        sign = -1.0 if directions[name] == "max" else 1.0
        term = float(w) * sign * np.asarray(deltas[name], dtype=float) / float(scale[name])
        total = term if total is None else total + term
    if total is None:
        raise ValueError("a lineage needs at least one objective with a weight > 0")
    return total


def top_options(scores: Sequence[float], options: Sequence[int], keep: int) -> list[int]:
    """The ``keep`` options of highest score (NaN lowest; ties: the lower option index first),
    returned sorted."""
    s = np.asarray([scores[k] for k in options], dtype=float)
    s = np.where(np.isfinite(s), s, -np.inf)
    order = sorted(range(len(options)), key=lambda i: (-s[i], options[i]))
    return sorted(int(options[i]) for i in order[:keep])


def coarse_select(
    score: np.ndarray, options: Sequence[Sequence[int]], keep: int = 2
) -> list[list[int]]:
    """Coarse selection: the ``keep`` most important options of every edge."""
    return [top_options(score[e], opts, keep) for e, opts in enumerate(options)]


def topology_select(edge_scores: Mapping[int, float], node: int, keep: int = 2) -> list[int]:
    """Topology selection at a DARTS node: the ``keep`` incoming edges (global indices) whose
    single operation is the most important (the authors' ``discretize_node``)."""
    first, end = DARTS_NODE_EDGES[node]
    edges = list(range(first, end))
    s = [float(edge_scores.get(e, np.nan)) for e in edges]
    s = [v if np.isfinite(v) else -np.inf for v in s]
    order = sorted(range(len(edges)), key=lambda i: (-s[i], edges[i]))
    return sorted(edges[i] for i in order[:keep])


def lineage_weights(
    objectives: Sequence[tuple[str, str]], count: int, accuracy: str, spread: float = 0.8
) -> list[dict[str, float]]:
    """``count`` trade-off weight vectors: lineage 0 is the paper's (accuracy alone); lineage
    ``i`` puts ``t_i = spread * i / (count - 1)`` on the costs (shared equally) and ``1 - t_i``
    on ``accuracy``. With accuracy the only objective, every lineage is the paper's."""
    costs = [n for n, _ in objectives if n != accuracy]
    out = []
    for i in range(count):
        t = spread * i / (count - 1) if count > 1 and costs else 0.0
        w = {accuracy: 1.0 - t}
        for c in costs:
            w[c] = t / len(costs)
        out.append(w)
    return out


__all__ = [
    "DARTS_FINE_ORDER",
    "DARTS_NODE_EDGES",
    "coarse_select",
    "fine_order",
    "importance",
    "lineage_weights",
    "scales",
    "top_options",
    "topology_select",
]
