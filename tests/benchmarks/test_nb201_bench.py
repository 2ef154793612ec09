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


class _Spy:
    """An engine wrapper recording how many proposals are outstanding and the order of tells."""

    def __init__(self, engine) -> None:
        self.engine, self.asked, self.told, self.most_pending = engine, [], [], 0
        self.space = engine.space  # what the benchmark's deduplication looks at

    def ask(self):
        proposal = self.engine.ask()
        if proposal is not None:
            self.asked.append(proposal.arch)
            self.most_pending = max(self.most_pending, len(self.asked) - len(self.told))
        return proposal

    def tell(self, proposal, values) -> None:
        self.told.append(proposal.arch)
        self.engine.tell(proposal, values)


def test_in_flight_keeps_k_outstanding_told_back_in_seeded_random_order(nb201_path, monkeypatch):
    import benchmarks.search_quality as sq

    bench = NB201Benchmark(load_table(nb201_path), "acc-params")
    spies = []
    make_engine = sq.make_engine

    def spy_engine(*args, **kwargs):
        spies.append(_Spy(make_engine(*args, **kwargs)))
        return spies[-1]

    monkeypatch.setattr(sq, "make_engine", spy_engine)
    cases = [(0, 4), (0, 4), (1, 4), (0, 1)]  # (seed, in flight)
    runs = [sq.run_engine(bench, "regularized_evolution", s, 40, {}, k) for s, k in cases]
    assert [s.most_pending for s in spies] == [4, 4, 4, 1]
    first = spies[0]
    assert len(first.told) == 40 and sorted(first.told) == sorted(first.asked)
    assert first.told != first.asked  # results come back out of order
    assert runs[0][0] == first.told  # scored in the order results come back
    assert runs[0][0] == runs[1][0] and runs[0][0] != runs[2][0]  # seeded
    assert spies[3].told == spies[3].asked


def test_in_flight_one_is_the_plain_ask_tell_loop(nb201_path):
    from benchmarks.search_quality import run_engine
    from paretune.search_algos import make_engine

    bench = NB201Benchmark(load_table(nb201_path), "acc-lat-energy")
    engine = make_engine("regularized_evolution", bench.space, bench.objectives, seed=3)
    plain = []
    for _ in range(60):
        proposal = engine.ask()
        engine.tell(proposal, bench.values(proposal.arch))
        plain.append(proposal.arch)
    assert run_engine(bench, "regularized_evolution", 3, 60, {})[0] == plain


def test_optuna_in_flight_asks_k_trials_before_telling(nb201_path, monkeypatch):
    import optuna

    from benchmarks.search_quality import run_engine

    bench = NB201Benchmark(load_table(nb201_path), "acc-params")
    studies = []
    create = optuna.create_study

    def keep(*args, **kwargs):
        studies.append(create(*args, **kwargs))
        return studies[-1]

    monkeypatch.setattr(optuna, "create_study", keep)
    archs = run_engine(bench, "optuna_nsga2", 0, 30, {}, 5)[0]
    trials = studies[0].get_trials()
    assert len(trials) == 30 and all(t.state.name == "COMPLETE" for t in trials)
    asked = [bench.space.from_params(t.params) for t in trials]  # in trial-number order
    assert sorted(archs) == sorted(asked) and archs != asked
    # Told back in random order: completion times are not in trial-number order.
    completed = sorted(trials, key=lambda t: t.datetime_complete)
    assert [t.number for t in completed] != list(range(30))


def test_search_quality_gp_row_with_several_in_flight(nb201_path, tmp_path, capsys) -> None:
    from benchmarks.search_quality import main

    out = tmp_path / "rows.csv"
    main(
        [
            "--objectives", "acc-params",
            "--engines", "optuna_gp,random",
            "--engine-param", "optuna_gp.n_startup_trials=6",
            "--seeds", "1",
            "--budgets", "5,9",
            "--in-flight", "1,3",
            "--jobs", "1",
            "--table", str(nb201_path),
            "--out", str(out),
        ]
    )  # fmt: skip
    text = capsys.readouterr().out
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 2 * 2 * 2
    assert {(r["engine"], r["in_flight"]) for r in rows} == {
        (e, k) for e in ("optuna_gp", "random") for k in ("1", "3")
    }
    for r in rows:
        assert int(r["evaluated"]) == int(r["budget"]) and 0.0 <= float(r["gap"]) <= 1.0
        assert float(r["wall_seconds"]) > 0.0
    assert "wall s" in text and any(line.startswith("optuna_gp") for line in text.splitlines())


def test_search_quality_rejects_in_flight_zero(nb201_path, capsys) -> None:
    from benchmarks.search_quality import main

    with pytest.raises(SystemExit):
        main(["--in-flight", "0", "--table", str(nb201_path)])
    assert "--in-flight" in capsys.readouterr().err
