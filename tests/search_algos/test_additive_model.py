"""Tests of the shared additive model (pertnas model proposals, tnd local-search children)."""

from __future__ import annotations

import numpy as np

from paretune.search_algos.additive_model import (
    epsilon_improvement,
    fit_additive,
    one_hot,
    option_fail_rates,
)


def test_one_hot_rows_are_decision_major():
    x = one_hot(np.array([[0, 2], [1, 0]]), [2, 3])
    assert x.tolist() == [[1, 0, 0, 0, 1], [0, 1, 1, 0, 0]]
    assert one_hot(np.zeros((0, 2), dtype=int), [2, 3]).shape == (0, 5)


def test_fit_recovers_additive_values_and_is_surer_where_it_has_data():
    rng = np.random.default_rng(0)
    sizes = [3, 4, 2]
    value = [np.array([0.0, 1.0, 3.0]), np.array([2.0, 0.0, 1.0, 5.0]), np.array([0.0, -1.0])]
    archs = np.stack([rng.integers(n, size=200) for n in sizes], axis=1)
    y = np.array([[sum(v[o] for v, o in zip(value, a, strict=True))] for a in archs])
    fit = fit_additive(one_hot(archs, sizes), y)
    grid = np.array([[a, b, c] for a in range(3) for b in range(4) for c in range(2)])
    truth = np.array([sum(v[o] for v, o in zip(value, a, strict=True)) for a in grid])
    pred = fit.mean(one_hot(grid, sizes))[:, 0]
    assert np.max(np.abs(pred - truth)) < 0.1
    # An arch made of options never seen is less certain than one made of seen options.
    seen_only = one_hot(archs[:1], sizes)
    lone = one_hot(np.array([[0, 0, 0]]), sizes)
    lone_fit = fit_additive(one_hot(archs[archs[:, 0] > 0], sizes), y[archs[:, 0] > 0])
    assert lone_fit.std(lone)[0, 0] > lone_fit.std(seen_only)[0, 0]
    assert np.all(fit.optimistic(lone, 1.0) < fit.mean(lone))


def test_epsilon_improvement_signs():
    ref = np.array([[0.0, 1.0], [1.0, 0.0]])
    pts = np.array([[0.5, 0.5], [-0.5, -0.5], [1.5, 1.5]])
    # A gap filler and a dominating point stand out (by 0.5, 1.5), a dominated one does not.
    assert epsilon_improvement(pts, ref).tolist() == [0.5, 1.5, -0.5]


def test_option_fail_rates_count_failed_rows_per_option():
    x = one_hot(np.array([[0, 1], [0, 0], [1, 1]]), [2, 2])
    rates = option_fail_rates(x, np.array([True, False, True]))
    assert rates.tolist() == [1 / 3, 1 / 2, 0.0, 2 / 3]
