"""NAS-LID's split of a supernet: partition each edge's options by their similarity, split the
edge whose partition is best, into sub-supernets (restricted ``edge_options``).

As the authors' ``split_supernet`` (``engine/fewshot_search.py``): an edge's options are cut into
``parts`` groups (``spectral``: scikit-learn's spectral clustering of the precomputed affinity
``S + 1``, ``assign_labels='discretize'``; ``mincut``: every 2-group partition enumerated, the one
with the largest intra-group similarity kept); a partition's *score* is the mean over groups of
the group's mean similarity (diagonal included, as the authors); the edge with the highest score
is split (the paper's rule; the authors' ``mincut`` mode ranks edges by the cross-group sum
instead, see the faithfulness notes). Only edges not split before (all the root's options still
allowed) are candidates. numpy and scikit-learn only.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

METHODS = ("spectral", "mincut")


def partition_score(similarity: np.ndarray, groups: Sequence[Sequence[int]]) -> float:
    """Mean over ``groups`` (row indices) of the group's mean similarity."""
    s = np.nan_to_num(np.asarray(similarity, dtype=np.float64))
    return float(np.mean([s[np.ix_(list(g), list(g))].mean() for g in groups]))


def _mincut(s: np.ndarray, parts: int) -> list[list[int]]:
    n = len(s)
    best, best_groups = -np.inf, [list(range(n))]
    labels_seen = set()
    for labels in itertools.product(range(parts), repeat=n):
        if len(set(labels)) != parts:
            continue
        canon = tuple(labels.index(v) for v in labels)  # first-appearance relabelling
        if canon in labels_seen:
            continue
        labels_seen.add(canon)
        groups = [[i for i in range(n) if labels[i] == g] for g in range(parts)]
        intra = sum(s[np.ix_(g, g)][np.triu_indices(len(g), 1)].sum() for g in groups)
        if intra > best:
            best, best_groups = intra, groups
    return best_groups


def bipartition(
    similarity: np.ndarray, method: str = "spectral", parts: int = 2, seed: int = 0
) -> tuple[list[list[int]], float]:
    """Groups (row indices) of the options and their :func:`partition_score`."""
    if method not in METHODS:
        raise ValueError(f"split.method = {method!r} is unknown (allowed: {list(METHODS)})")
    s = np.nan_to_num(np.asarray(similarity, dtype=np.float64))
    n = len(s)
    if n < parts:
        raise ValueError(f"{n} options cannot be split into {parts} groups")
    groups: list[list[int]] = []
    if method == "spectral" and n > parts:
        from sklearn.cluster import SpectralClustering

        labels = SpectralClustering(
            n_clusters=parts, affinity="precomputed", assign_labels="discretize", random_state=seed
        ).fit_predict(np.clip(s + 1.0, 0.0, None))
        groups = [[i for i in range(n) if labels[i] == g] for g in sorted(set(labels))]
    if len(groups) != parts:  # n == parts, mincut, or a degenerate clustering
        groups = _mincut(s, parts)
    return groups, partition_score(s, groups)


def choose_split(
    similarities: Mapping[int, tuple[Sequence[int], np.ndarray]],
    method: str = "spectral",
    parts: int = 2,
    seed: int = 0,
) -> dict[str, Any]:
    """The best edge to split: ``{"edge", "groups" (option indices), "score", "scores"}``,
    ``similarities`` mapping an edge to (its options, their similarity matrix)."""
    if not similarities:
        raise ValueError("no edge left to split (every edge was split or has one option)")
    scores: dict[int, float] = {}
    best: dict[str, Any] = {}
    for edge in sorted(similarities):
        options, s = similarities[edge]
        groups, score = bipartition(s, method, parts, seed)
        scores[edge] = score
        if not best or score > best["score"]:
            best = {
                "edge": int(edge),
                "groups": [[int(options[i]) for i in g] for g in groups],
                "score": float(score),
            }
    best["scores"] = {int(e): float(v) for e, v in scores.items()}
    return best


def splittable_edges(
    edge_options: Sequence[Sequence[int]], root_options: Sequence[Sequence[int]], parts: int = 2
) -> list[int]:
    """Edges not split before (all the root's options allowed) with at least ``parts`` options."""
    return [
        e
        for e, (mine, root) in enumerate(zip(edge_options, root_options, strict=True))
        if sorted(mine) == sorted(root) and len(mine) >= parts
    ]


def children(
    edge_options: Sequence[Sequence[int]], edge: int, groups: Sequence[Sequence[int]]
) -> list[list[list[int]]]:
    """The sub-supernets' ``edge_options``: ``edge`` restricted to each group."""
    out = []
    for g in groups:
        child = [list(map(int, o)) for o in edge_options]
        child[edge] = sorted(int(k) for k in g)
        out.append(child)
    return out


__all__ = [
    "METHODS",
    "bipartition",
    "children",
    "choose_split",
    "partition_score",
    "splittable_edges",
]
