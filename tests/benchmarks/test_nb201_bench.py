"""The NB201 search-quality convention and the search_quality harness."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from benchmarks.nb201_bench import (
    NB201Benchmark,
    bench_objectives,
    hypervolume_gap,
    normalisation_bounds,
    normalise,
    pareto_front,
    reference_point,
)
from paretune.objectives.nb201_table import load_table


@pytest.fixture(scope="module", params=["acc-lat-energy", "acc-params"])
def bench(request, nb201_path) -> NB201Benchmark:
    return NB201Benchmark(load_table(nb201_path), request.param)


# ---------------------------------------------------------------------- the convention on toy data
def test_normalise_front_reference_and_gap_by_hand() -> None:
    raw = np.array([[-90.0, 1.0], [-80.0, 0.5], [-70.0, 3.0], [-90.0, 1.0]])
    lo, hi = normalisation_bounds(raw)
    pts = normalise(raw, lo, hi)
    np.testing.assert_allclose(pts, [[0.0, 0.2], [0.5, 0.0], [1.0, 1.0], [0.0, 0.2]])
    front = pareto_front(pts)  # duplicates merged, dominated point dropped
    np.testing.assert_allclose(front, [[0.0, 0.2], [0.5, 0.0]])
    ref = reference_point(front)
    np.testing.assert_allclose(ref, [0.55, 0.22])  # nadir (0.5, 0.2) + 10% of range (0.5, 0.2)
    # HV(front) = 0.55*0.22 - 0.5*0.2 = 0.021; the point (0, 0.2) alone covers 0.55*0.02 = 0.011.
    assert hypervolume_gap(front, front, ref) == pytest.approx(0.0)
    assert hypervolume_gap(front[:1], front, ref) == pytest.approx(1 - 0.011 / 0.021)
    assert hypervolume_gap(np.zeros((0, 2)), front, ref) == pytest.approx(1.0)


def test_reference_of_a_flat_objective_gets_the_margin() -> None:
    np.testing.assert_allclose(reference_point(np.array([[0.2, 0.5], [0.4, 0.5]])), [0.42, 0.6])


def test_unknown_objective_set_is_named() -> None:
    with pytest.raises(ValueError, match="unknown objective set 'acc-flops'"):
        bench_objectives("acc-flops")
    assert [o.search_column for o in bench_objectives("acc-params", "cifar100")] == [
        "cifar100_valid_200",
        "cifar100_params_m",
    ]


# ---------------------------------------------------------------------- the convention on the table
def test_scores_are_normalised_minimisation(bench: NB201Benchmark) -> None:
    assert bench.scores.shape == (15625, len(bench.objectives))
    np.testing.assert_allclose(bench.scores.min(axis=0), 0.0)
    np.testing.assert_allclose(bench.scores.max(axis=0), 1.0)
    best = int(np.argmax(bench.test_accuracy))
    assert bench.test_accuracy[best] == pytest.approx(94.3733, abs=1e-3)  # README: index 6111
    assert bench.scores[best, 0] == 0.0  # max accuracy -> 0 after minimisation + normalisation


def test_search_sees_valid_accuracy(bench: NB201Benchmark, nb201_path) -> None:
    table = load_table(nb201_path)
    arch = bench.space.decode(table.loc[6111, "arch"])
    values = bench.values(arch)
    assert set(values) == set(bench.objectives.names)
    assert values["accuracy"] == pytest.approx(table.loc[6111, "cifar10_valid_200"])
    assert bench.best_test_accuracy([arch]) == pytest.approx(table.loc[6111, "cifar10_test_200"])


def test_gap_of_the_true_front_is_zero(bench: NB201Benchmark) -> None:
    assert bench.true_hypervolume > 0
    assert bench.gap(bench.front_archs()) == pytest.approx(0.0, abs=1e-12)
    assert bench.gap(bench.archs) == pytest.approx(0.0, abs=1e-12)
    # The reference is the front's nadir plus 10% of its range.
    span = bench.front.max(axis=0) - bench.front.min(axis=0)
    np.testing.assert_allclose(bench.reference, bench.front.max(axis=0) + 0.1 * span)


def test_gap_of_a_random_small_set_is_in_0_1(bench: NB201Benchmark) -> None:
    rng = np.random.default_rng(0)
    for size in (1, 5, 20):
        archs = [bench.archs[i] for i in rng.choice(len(bench.archs), size=size, replace=False)]
        gap = bench.gap(archs)
        assert 0.0 < gap <= 1.0
    worst = bench.archs[int(np.argmin(bench.test_accuracy))]
    assert 0.0 < bench.gap([worst]) <= 1.0
    # Adding the whole front to any set closes the gap; removing it opens it.
    front = bench.front_archs()
    assert bench.gap(archs + front) == pytest.approx(0.0, abs=1e-12)
    assert bench.gap(front[:-1]) > 0.0


# ---------------------------------------------------------------------- the harness
def test_search_quality_runs_every_kind_of_engine(nb201_path, tmp_path, capsys) -> None:
    from benchmarks.search_quality import main

    out = tmp_path / "rows.csv"
    main(
        [
            "--objectives", "acc-params",
            "--engines", "random,regularized_evolution,optuna_nsga2,optuna_tpe",
            "--engine-param", "regularized_evolution.population_size=10",
            "--seeds", "2",
            "--budgets", "15,30",
            "--jobs", "1",
            "--table", str(nb201_path),
            "--out", str(out),
        ]
    )  # fmt: skip
    text = capsys.readouterr().out
    assert "[acc-params]" in text and "seeds 0..1" in text
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 4 * 2 * 2
    for r in rows:
        assert 0.0 <= float(r["gap"]) <= 1.0
        assert int(r["evaluated"]) == int(r["budget"])
    # Scored on prefixes: more budget never makes the gap worse.
    by_run = {}
    for r in rows:
        by_run.setdefault((r["engine"], r["seed"]), {})[int(r["budget"])] = float(r["gap"])
    assert all(g[30] <= g[15] for g in by_run.values())
    for engine in ("random", "regularized_evolution", "optuna_nsga2", "optuna_tpe"):
        assert any(line.startswith(engine) for line in text.splitlines())


def test_search_quality_rejects_bad_arguments(nb201_path) -> None:
    from benchmarks.search_quality import main

    with pytest.raises(SystemExit):
        main(["--engines", "simulated_annealing", "--table", str(nb201_path)])
    with pytest.raises(SystemExit, match="ENGINE.KEY=VALUE"):
        main(
            [
                "--engines",
                "random",
                "--engine-param",
                "random",
                "--table",
                str(nb201_path),
                "--seeds",
                "1",
            ]
        )
