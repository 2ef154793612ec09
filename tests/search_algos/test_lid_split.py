"""NAS-LID's split: partition of an edge's options, choice of the edge, sub-supernets."""

from __future__ import annotations

import numpy as np
import pytest

from paretune.search_algos.lid_split import (
    bipartition,
    children,
    choose_split,
    partition_score,
    splittable_edges,
)


def _two_blocks() -> np.ndarray:
    # options 0, 2, 4 alike; 1, 3 alike; weak across
    s = np.full((5, 5), 0.1)
    for g in ([0, 2, 4], [1, 3]):
        for i in g:
            for j in g:
                s[i, j] = 0.9
    np.fill_diagonal(s, 1.0)
    return s


@pytest.mark.parametrize("method", ["spectral", "mincut"])
def test_bipartition_finds_the_two_blocks(method: str) -> None:
    groups, score = bipartition(_two_blocks(), method)
    assert sorted(map(sorted, groups)) == [[0, 2, 4], [1, 3]]
    assert score == pytest.approx(partition_score(_two_blocks(), [[0, 2, 4], [1, 3]]))
    assert score > partition_score(_two_blocks(), [[0, 1], [2, 3, 4]])


def test_choose_split_takes_the_edge_with_the_best_partition() -> None:
    flat = np.full((5, 5), 0.5)
    np.fill_diagonal(flat, 1.0)
    out = choose_split({0: (list(range(5)), flat), 3: ([0, 1, 2, 3, 4], _two_blocks())})
    assert out["edge"] == 3
    assert sorted(map(sorted, out["groups"])) == [[0, 2, 4], [1, 3]]
    assert out["scores"][3] > out["scores"][0]


def test_options_keep_their_indices_and_children_restrict_one_edge() -> None:
    out = choose_split({1: ([1, 2, 4], np.array([[1, 0.9, 0], [0.9, 1, 0], [0, 0, 1.0]]))})
    assert sorted(map(sorted, out["groups"])) == [[1, 2], [4]]
    root = [[0, 1, 2, 3, 4]] * 2
    kids = children(root, 1, out["groups"])
    assert sorted(k[1] for k in kids) == [[1, 2], [4]] and all(k[0] == root[0] for k in kids)
    assert splittable_edges(kids[0], root) == [0]
    assert splittable_edges([[0], [0, 1]], [[0], [0, 1]]) == [1]


def test_bad_method_and_nothing_to_split_name_the_problem() -> None:
    with pytest.raises(ValueError, match="split.method = 'kmeans'"):
        bipartition(_two_blocks(), "kmeans")
    with pytest.raises(ValueError, match="no edge left"):
        choose_split({})
