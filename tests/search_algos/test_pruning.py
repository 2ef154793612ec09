"""Option fitness and pruning rules (numpy only), pinned on small hand-made samples."""

from __future__ import annotations

import numpy as np
import pytest

from paretune.search_algos.pruning import (
    combined_rank,
    normalised_rank,
    option_scores,
    protected_options,
    prune,
    random_prune,
)
from paretune.spaces.base import Decision, SearchSpace


def space(n_decisions: int = 2, n_options: int = 3) -> SearchSpace:
    opts = tuple("abcdefgh"[:n_options])
    return SearchSpace([Decision(f"d{k}", opts) for k in range(n_decisions)])


def test_normalised_rank_averages_ties_and_puts_nan_last():
    assert normalised_rank([3.0, 1.0, 2.0]).tolist() == [1.0, 0.0, 0.5]
    assert normalised_rank([1.0, 1.0, 5.0]).tolist() == [0.25, 0.25, 1.0]
    assert normalised_rank([np.nan, 0.0]).tolist() == [0.0, 1.0]
    assert combined_rank([[1, 2, 3], [3, 2, 1]]).tolist() == [0.5, 0.5, 0.5]


def test_option_fitness_is_the_mean_rank_of_the_samples_using_it():
    s = space(1, 3)
    archs = [(0,), (0,), (1,), (1,)]
    fit = option_scores(s, archs, [4.0, 2.0, 3.0, 1.0])  # ranks 1, 1/3, 2/3, 0
    assert fit[0][0] == pytest.approx(2 / 3)
    assert fit[0][1] == pytest.approx(1 / 3)
    assert np.isnan(fit[0][2])  # never sampled: no fitness, never removed


def test_proxy_rule_removes_the_worst_share_and_never_empties_a_decision():
    s = space(2, 5)
    rng = np.random.default_rng(0)
    archs = [s.sample(rng) for _ in range(200)]
    scores = [a[0] + a[1] for a in archs]  # higher option index: better
    result = prune(s, archs, scores, ratio=0.5)
    assert result.allowed == [[2, 3, 4], [2, 3, 4]]  # floor(0.5 * 5) = 2 removed
    assert result.removed_names(s) == {"d0": ["a", "b"], "d1": ["a", "b"]}
    assert s.restrict(result.allowed).size == 9
    one = space(1, 1)
    assert prune(one, [(0,)] * 3, [1, 2, 3], ratio=0.9).allowed == [[0]]
    assert prune(s, archs, scores, ratio=0.0).allowed == [list(range(5))] * 2
    two = space(1, 2)
    assert prune(two, [(0,), (1,)], [1, 2], ratio=0.99).allowed == [[1]]


def test_front_rule_keeps_the_options_of_the_cheap_end_of_the_front():
    # Option 0 is cheap and scores badly (a proxy correlated with size): plain pruning drops
    # it, although the cheapest architectures of the (score, cost) front all use it.
    s = space(2, 3)
    archs = list(s)
    cost = [1.0 + 10 * a[0] + a[1] for a in archs]
    scores = list(cost)  # proxy == size
    plain = prune(s, archs, scores, ratio=0.34, rule="proxy")
    assert plain.removed[0] == [0]
    protected = protected_options(s, archs, scores, cost)
    assert 0 in protected[0]
    front = prune(s, archs, scores, ratio=0.34, rule="front", costs=cost)
    assert 0 in front.allowed[0]
    assert front.protected == protected


def test_bad_ratio_and_rule_are_named():
    s = space()
    with pytest.raises(ValueError, match=r"prune.ratio = 1: must be a number in \[0, 1\)"):
        prune(s, [(0, 0)], [1.0], ratio=1)
    with pytest.raises(
        ValueError, match=r"prune.rule = 'best': unknown rule \(allowed: proxy, front"
    ):
        prune(s, [(0, 0)], [1.0], rule="best")
    with pytest.raises(ValueError, match="needs one cost per sampled architecture"):
        prune(s, [(0, 0)], [1.0], rule="front")


def test_random_pruning_removes_as_many_options():
    s = space(3, 5)
    allowed = random_prune(s, 0.5, np.random.default_rng(1))
    assert [len(a) for a in allowed] == [3, 3, 3]
    assert allowed != random_prune(s, 0.5, np.random.default_rng(2))


def test_only_the_chosen_decisions_are_pruned():
    from paretune.search_algos.pruning import select_decisions
    from paretune.spaces import make_space

    darts = make_space("darts")
    ops = select_decisions(darts, "*_op*")
    assert ops and all("_op" in darts.decisions[k].name for k in ops)
    rng = np.random.default_rng(0)
    archs = [darts.sample(rng) for _ in range(60)]
    result = prune(darts, archs, [sum(a) for a in archs], ratio=0.5, decisions=ops)
    for k, kept in enumerate(result.allowed):
        assert len(kept) == (4 if k in ops else len(darts.allowed[k]))
    with pytest.raises(ValueError, match=r"prune.decisions = \['edge\*'\]: matches no decision"):
        select_decisions(darts, ["edge*"])
