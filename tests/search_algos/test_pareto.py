"""pareto.py against brute force: domination, (constrained) sorting, crowding, hypervolume."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from paretune.search_algos.pareto import (
    ConstrainedArchive,
    RunningFront,
    constrained_dominates,
    constrained_front_indices,
    crowding_distance,
    dominates,
    front_indices,
    hv_contributions,
    hypervolume,
    non_dominated_sort,
    ranks,
    reference_point,
)


# ---------------------------------------------------------------------- brute force, from the definitions
def bf_dominates(a, b) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(
        x < y for x, y in zip(a, b, strict=True)
    )


def bf_constrained_dominates(a, va, b, vb) -> bool:
    if va == 0 and vb == 0:
        return bf_dominates(a, b)
    if va == 0:
        return True
    if vb == 0:
        return False
    return va < vb


def bf_fronts(points, violations=None) -> list[set[int]]:
    """Peel fronts: a front is every remaining point no remaining point dominates."""
    points = [tuple(p) for p in np.asarray(points).tolist()]
    v = [0.0] * len(points) if violations is None else [float(x) for x in violations]
    remaining = set(range(len(points)))
    fronts = []
    while remaining:
        front = {
            i
            for i in remaining
            if not any(
                bf_constrained_dominates(points[j], v[j], points[i], v[i]) for j in remaining
            )
        }
        fronts.append(front)
        remaining -= front
    return fronts


def random_cases(seed: int, count: int):
    """Small integer point sets (many ties and duplicates), 2-4 objectives."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        n = int(rng.integers(1, 30))
        m = int(rng.integers(2, 5))
        points = rng.integers(0, 4, size=(n, m)).astype(float)
        if n > 2:  # force exact duplicates
            points[-1] = points[0]
        yield points


def random_violations(rng, n: int, feasible: float) -> np.ndarray:
    """A ``feasible`` share of zeros, the rest a few distinct violation levels (ties included)."""
    return np.where(rng.random(n) < feasible, 0.0, rng.choice([0.5, 1.0, 2.0], size=n))


# ---------------------------------------------------------------------- domination
def test_dominates_basic_cases() -> None:
    a = np.array([1.0, 2.0])
    assert dominates(a, np.array([1.0, 3.0]))
    assert not dominates(a, a.copy())  # equal points do not dominate each other
    assert not dominates(np.array([1.0, 3.0]), np.array([2.0, 2.0]))
    assert not dominates(np.array([2.0, 2.0]), np.array([1.0, 3.0]))


def test_constrained_dominates_follows_debs_rule() -> None:
    good, bad = np.array([0.0, 0.0]), np.array([5.0, 5.0])
    assert constrained_dominates(bad, 0.0, good, 0.1)  # feasible beats infeasible
    assert not constrained_dominates(good, 0.1, bad, 0.0)
    assert constrained_dominates(bad, 0.1, good, 0.2)  # less violation wins among infeasible
    assert not constrained_dominates(good, 0.2, good, 0.2)  # equal violations: neither
    assert constrained_dominates(good, 0.0, bad, 0.0)


# ---------------------------------------------------------------------- sorting vs brute force
@pytest.mark.parametrize("seed", range(4))
def test_non_dominated_sort_matches_brute_force(seed: int) -> None:
    for points in random_cases(seed, 50):
        expected = bf_fronts(points)
        fronts = non_dominated_sort(points)
        assert [set(f.tolist()) for f in fronts] == expected
        # Every index exactly once.
        assert sorted(np.concatenate(fronts).tolist()) == list(range(len(points)))
        assert set(front_indices(points).tolist()) == expected[0]
        expected_ranks = np.empty(len(points), dtype=int)
        for k, f in enumerate(expected):
            expected_ranks[list(f)] = k
        assert ranks(points).tolist() == expected_ranks.tolist()


@pytest.mark.parametrize("seed", range(4))
def test_constrained_sort_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    for points in random_cases(200 + seed, 50):
        violations = random_violations(rng, len(points), feasible=0.5)
        expected = bf_fronts(points, violations)
        fronts = non_dominated_sort(points, violations)
        assert [set(f.tolist()) for f in fronts] == expected
        assert set(constrained_front_indices(points, violations).tolist()) == expected[0]


@pytest.mark.parametrize("seed", range(3))
def test_running_front_answers_like_brute_force_point_by_point(seed: int) -> None:
    rng = np.random.default_rng(300 + seed)
    for points in random_cases(400 + seed, 40):
        violations = random_violations(rng, len(points), feasible=0.7)
        front = RunningFront()
        for k, (p, v) in enumerate(zip(points, violations, strict=True)):
            seen_before = any(
                bf_constrained_dominates(points[j], violations[j], p, v) for j in range(k)
            )
            assert front.add(p, v) is (not seen_before)
        # What it keeps at the end is exactly the first front (duplicates included).
        assert len(front) == len(bf_fronts(points, violations)[0])


def test_duplicates_share_a_front() -> None:
    points = np.array([[1.0, 1.0], [1.0, 1.0], [2.0, 2.0], [0.0, 3.0]])
    fronts = non_dominated_sort(points)
    assert set(fronts[0].tolist()) == {0, 1, 3}
    assert fronts[1].tolist() == [2]


def test_all_infeasible_returns_the_least_violating() -> None:
    points = np.array([[0.0, 0.0], [9.0, 9.0], [5.0, 1.0], [1.0, 5.0]])
    violations = np.array([3.0, 0.5, 0.5, 1.0])
    # The objective-wise best point (index 0) violates most, so it comes last.
    assert set(constrained_front_indices(points, violations).tolist()) == {1, 2}
    assert [set(f.tolist()) for f in non_dominated_sort(points, violations)] == [{1, 2}, {3}, {0}]


def test_feasible_points_come_first_whatever_their_objectives() -> None:
    points = np.array([[9.0, 9.0], [0.0, 0.0], [9.0, 10.0]])
    violations = np.array([0.0, 0.1, 0.0])
    fronts = [set(f.tolist()) for f in non_dominated_sort(points, violations)]
    assert fronts == [{0}, {2}, {1}]


def test_empty_inputs() -> None:
    empty = np.zeros((0, 2))
    assert non_dominated_sort(empty) == []
    assert front_indices(empty).size == 0
    assert constrained_front_indices(empty, []).size == 0


# ---------------------------------------------------------------------- crowding
def test_crowding_known_values_2d() -> None:
    points = np.array([[0.0, 4.0], [1.0, 2.0], [2.0, 1.0], [4.0, 0.0]])
    # Interior: obj 0 (2-0)/4 + obj 1 (4-1)/4 = 1.25 for [1, 2]; (4-1)/4 + (2-0)/4 = 1.25 for [2, 1].
    np.testing.assert_allclose(crowding_distance(points), [np.inf, 1.25, 1.25, np.inf])


def test_crowding_known_values_3d_and_scale_invariance() -> None:
    points = np.array([[0.0, 0.0, 4.0], [1.0, 3.0, 2.0], [3.0, 1.0, 1.0], [4.0, 4.0, 0.0]])
    # [1,3,2]: (3-0)/4 + (4-1)/4 + (4-1)/4 = 2.25; [3,1,1]: (4-1)/4 + (3-0)/4 + (2-0)/4 = 2.0.
    expected = [np.inf, 2.25, 2.0, np.inf]
    np.testing.assert_allclose(crowding_distance(points), expected)
    np.testing.assert_allclose(crowding_distance(points * [1.0, 100.0, 0.01]), expected)


def test_crowding_small_sets_and_constant_objectives() -> None:
    assert np.all(np.isinf(crowding_distance(np.array([[1.0, 2.0], [2.0, 1.0]]))))
    assert np.all(np.isinf(crowding_distance(np.array([[1.0, 2.0]]))))
    # A constant objective adds nothing to interior points.
    points = np.array([[0.0, 5.0], [1.0, 5.0], [3.0, 5.0], [4.0, 5.0]])
    d = crowding_distance(points)
    np.testing.assert_allclose(d[[1, 2]], [3 / 4, 3 / 4])


# ---------------------------------------------------------------------- hypervolume
def test_hypervolume_hand_computed_2d() -> None:
    points = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    ref = np.array([4.0, 4.0])
    # Staircase: x in [1,2) height 1, [2,3) height 2, [3,4) height 3.
    assert hypervolume(points, ref) == pytest.approx(6.0)
    # Dominated points, duplicates and points beyond the reference change nothing.
    more = np.vstack([points, [[2.5, 2.5], [2.0, 2.0], [5.0, 0.0], [4.0, 1.0]]])
    assert hypervolume(more, ref) == pytest.approx(6.0)
    assert hypervolume(np.array([[0.0, 0.0]]), ref) == pytest.approx(16.0)


def test_hypervolume_box_and_empty() -> None:
    assert hypervolume(np.array([[1.0, 1.0, 1.0]]), np.array([2.0, 3.0, 4.0])) == pytest.approx(6.0)
    assert hypervolume(np.zeros((0, 2)), np.array([1.0, 1.0])) == 0.0
    assert hypervolume(np.array([[2.0, 2.0]]), np.array([1.0, 1.0])) == 0.0


def test_hypervolume_matches_grid_count_3d() -> None:
    """Integer points: the hypervolume is the number of unit cells some point dominates."""
    rng = np.random.default_rng(7)
    points = rng.integers(0, 5, size=(8, 3)).astype(float)
    ref = np.array([5.0, 5.0, 5.0])
    cells = sum(
        1
        for c in itertools.product(range(5), repeat=3)
        if any(np.all(p <= np.array(c)) for p in points)
    )
    assert hypervolume(points, ref) == pytest.approx(float(cells))


# ---------------------------------------------------------------------- archive, reference, contributions
@pytest.mark.parametrize("seed", range(3))
def test_archive_keeps_the_first_front_with_keys_in_arrival_order(seed: int) -> None:
    rng = np.random.default_rng(700 + seed)
    for points in random_cases(800 + seed, 30):
        violations = random_violations(rng, len(points), feasible=0.6)
        archive = ConstrainedArchive()
        for k, (p, v) in enumerate(zip(points, violations, strict=True)):
            archive.add(p, v, key=k)
        expected = sorted(bf_fronts(points, violations)[0])
        assert archive.keys == expected  # arrival order is index order
        np.testing.assert_array_equal(archive.points, points[expected])
        feasible = [k for k in expected if violations[k] <= 0]
        assert archive.feasible_keys() == feasible


def test_running_front_is_the_archive() -> None:
    assert RunningFront is ConstrainedArchive


def test_reference_point_is_nadir_plus_ten_percent_of_range() -> None:
    pts = np.array([[0.0, 10.0, 5.0], [2.0, 30.0, 5.0]])
    # A flat objective gets 10% of max(|nadir|, 1); one at 0 gets 0.1.
    np.testing.assert_allclose(reference_point(pts), [2.2, 32.0, 5.5])
    np.testing.assert_allclose(reference_point(np.array([[0.0, -0.5]])), [0.1, -0.4])
    np.testing.assert_allclose(reference_point(pts, margin=0.5), [3.0, 40.0, 7.5])


@pytest.mark.parametrize("m", [2, 3, 4])
def test_exclusive_contributions_are_the_hypervolume_lost(m: int) -> None:
    rng = np.random.default_rng(m)
    pts = rng.random((40, m))
    front = pts[[not any(bf_dominates(q, p) for q in pts) for p in pts]]
    ref = reference_point(front)
    total = hypervolume(front, ref)
    exact = np.array(
        [total - hypervolume(np.delete(front, i, axis=0), ref) for i in range(len(front))]
    )
    np.testing.assert_allclose(hv_contributions(front, ref), exact, atol=1e-12)


def test_duplicates_contribute_nothing_unless_shared() -> None:
    pts = np.array([[0.0, 1.0], [0.5, 0.5], [0.5, 0.5], [1.0, 0.0]])
    ref = np.array([1.1, 1.1])
    np.testing.assert_allclose(hv_contributions(pts, ref), [0.05, 0.0, 0.0, 0.05])
    shared = hv_contributions(pts, ref, shared_duplicates=True)
    np.testing.assert_allclose(shared, [0.05, 0.25, 0.25, 0.05])


def test_hv_contributions_of_one_objective():
    """One objective (moocore needs two): only a lone best value contributes, up to the next
    value or the reference; equal best values share it only with ``shared_duplicates``."""
    ref = np.array([10.0])
    np.testing.assert_allclose(hv_contributions(np.array([[2.0], [5.0]]), ref), [3.0, 0.0])
    np.testing.assert_allclose(hv_contributions(np.array([[2.0]]), ref), [8.0])
    np.testing.assert_allclose(hv_contributions(np.array([[2.0], [2.0]]), ref), [0.0, 0.0])
    shared = hv_contributions(np.array([[2.0], [2.0]]), ref, shared_duplicates=True)
    np.testing.assert_allclose(shared, [8.0, 8.0])
