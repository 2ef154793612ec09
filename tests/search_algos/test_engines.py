"""Conformance of every registered engine, then what is specific to random search and evolution."""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Callable

import numpy as np
import pytest

from paretune.objectives.base import Objective, ObjectiveSet
from paretune.search_algos import Engine, Proposal, engine_names, make_engine
from paretune.search_algos.evolution import RegularizedEvolution
from paretune.search_algos.pareto import constrained_dominates
from paretune.search_algos.random_search import RandomSearch, UnseenSampler
from paretune.spaces import NB201Space, make_space
from paretune.spaces.base import Decision, SearchSpace

SPACE = NB201Space()
OBJECTIVES = ObjectiveSet.of(("accuracy", "max"), ("params", "min"))
LIMITED = ObjectiveSet(
    (Objective("accuracy", "max", limit=75.0), Objective("params", "min", limit=1.0))
)
ENGINES = engine_names()


def evaluate(arch) -> dict[str, float]:
    """A deterministic stand-in for the table: convolutions buy accuracy with parameters."""
    conv3, conv1, none = arch.count(3), arch.count(2), arch.count(0)
    wobble = sum((i + 1) * a for i, a in enumerate(arch)) % 7
    return {
        "accuracy": 60.0 + 5.0 * conv3 + 3.0 * conv1 - 4.0 * none + 0.3 * wobble,
        "params": 0.1 + 0.3 * conv3 + 0.05 * conv1,
    }


def drive(
    engine: Engine,
    count: int,
    in_flight: int = 1,
    result: Callable[[Proposal], dict[str, float] | None] = lambda p: evaluate(p.arch),
) -> list[Proposal]:
    """Ask up to ``in_flight`` proposals, tell them newest first; stop after ``count`` tells.

    ``result`` returning ``None`` reports a failure. Stops early when the engine is done
    (``None`` with nothing in flight).
    """
    told: list[Proposal] = []
    while len(told) < count:
        batch = []
        while len(batch) < min(in_flight, count - len(told)):
            p = engine.ask()
            if p is None:
                break
            batch.append(p)
        if not batch and not engine.pending:
            break
        for p in reversed(batch or list(engine.pending.values())):
            values = result(p)
            if values is None:
                engine.tell_failure(p, "boom")
            else:
                engine.tell(p, values)
            told.append(p)
    return told


def signature(proposals: list[Proposal]) -> list[tuple]:
    return [(p.id, p.arch, json.dumps(p.meta, sort_keys=True)) for p in proposals]


def assert_archive_is_the_front(engine: Engine, objectives: ObjectiveSet) -> None:
    """The archive is exactly the (constrained) non-dominated set of the unique successes."""
    unique = {}
    for r in engine.history:
        if not r.failed and r.proposal.arch not in unique:
            unique[r.proposal.arch] = r
    records = list(unique.values())
    pts = [objectives.vector(r.values) for r in records]
    vio = [objectives.violation(r.values) for r in records]
    expected = {
        records[i].proposal.arch
        for i in range(len(records))
        if not any(
            constrained_dominates(pts[j], vio[j], pts[i], vio[i]) for j in range(len(records))
        )
    }
    archive = engine.archive()
    assert {r.proposal.arch for r in archive} == expected
    assert len(archive) == len(expected)


# ====================================================================== conformance, every engine
def test_registry_lists_the_baselines() -> None:
    assert {"random", "regularized_evolution"} <= set(ENGINES)


@pytest.mark.parametrize("name", ENGINES)
def test_ask_returns_valid_distinct_proposals(name: str) -> None:
    engine = make_engine(name, SPACE, OBJECTIVES, seed=0)
    first = engine.ask()
    assert first is not None and first.id in engine.pending
    engine.tell(first, evaluate(first.arch))
    assert first.id not in engine.pending
    told = [first, *drive(engine, 60, in_flight=4)]
    assert len(told) == 61
    ids = [p.id for p in told]
    assert len(set(ids)) == len(ids)
    for p in told:
        assert SPACE.contains(p.arch)
        assert isinstance(p.arch, tuple)
        json.dumps(p.meta)
    assert engine.num_told == 61 and not engine.pending


@pytest.mark.parametrize("name", ENGINES)
def test_tell_values_and_failures_are_recorded(name: str) -> None:
    engine = make_engine(name, SPACE, OBJECTIVES, seed=1)
    p = engine.ask()
    engine.tell(p, {**evaluate(p.arch), "extra": 1.0})
    assert engine.history[-1].values == evaluate(p.arch)
    q = engine.ask()
    engine.tell_failure(q, "out of memory")
    last = engine.history[-1]
    assert last.failed and last.values is None and last.error == "out of memory"
    assert q.id not in engine.pending
    assert [r.proposal.id for r in engine.successes()] == [p.id]


@pytest.mark.parametrize("name", ENGINES)
@pytest.mark.parametrize(
    "bad",
    [
        {"accuracy": math.nan, "params": 1.0},
        {"accuracy": 90.0, "params": math.inf},
        {"accuracy": -math.inf, "params": 1.0},
        {"accuracy": 90.0},
        {"accuracy": None, "params": 1.0},
        {"accuracy": "high", "params": 1.0},
    ],
)
def test_invalid_values_become_failures(name: str, bad: dict) -> None:
    engine = make_engine(name, SPACE, OBJECTIVES, seed=2)
    p = engine.ask()
    engine.tell(p, bad)
    assert engine.history[-1].failed
    assert "invalid objective values" in engine.history[-1].error
    assert engine.archive() == []
    assert engine.ask() is not None


def _every_fifth_fails(p: Proposal) -> dict[str, float] | None:
    return None if p.id % 5 == 2 else evaluate(p.arch)


@pytest.mark.parametrize("name", ENGINES)
def test_a_proposal_told_twice_is_ignored(name: str) -> None:
    """A second tell (result or failure) of a proposal changes nothing and returns False."""
    engine = make_engine(name, SPACE, OBJECTIVES, seed=3)
    twin = make_engine(name, SPACE, OBJECTIVES, seed=3)
    told = drive(engine, 15, in_flight=3, result=_every_fifth_fails)
    drive(twin, 15, in_flight=3, result=_every_fifth_fails)
    failed = next(p for p in told if p.id % 5 == 2)
    before = json.dumps(engine.state_dict(), sort_keys=True)
    for p in (told[-1], told[0], failed):
        copy = Proposal.from_dict(p.to_dict())  # the same proposal, as a resumed adapter has it
        assert engine.was_told(copy)
        assert engine.tell(copy, evaluate(p.arch)) is False
        assert engine.tell(copy, {"accuracy": 99.0, "params": 0.0}) is False
        assert engine.tell_failure(copy, "again") is False
        assert engine.tell(copy, {"accuracy": math.nan, "params": 1.0}) is False
    assert json.dumps(engine.state_dict(), sort_keys=True) == before
    assert len(engine.history) == len({r.proposal.id for r in engine.history}) == 15
    # The search goes on as if nothing had been told twice; also after a state round trip.
    clone = make_engine(name, SPACE, OBJECTIVES, seed=3)
    clone.load_state_dict(json.loads(before))
    assert clone.tell(told[1], evaluate(told[1].arch)) is False
    assert len(clone.history) == 15
    expected = signature(drive(twin, 20, in_flight=2))
    assert signature(drive(engine, 20, in_flight=2)) == expected
    assert signature(drive(clone, 20, in_flight=2)) == expected


@pytest.mark.parametrize("name", ENGINES)
def test_state_round_trips_through_json(name: str) -> None:
    def flaky(p: Proposal) -> dict[str, float] | None:
        return None if p.id % 5 == 3 else evaluate(p.arch)

    engine = make_engine(name, SPACE, OBJECTIVES, seed=3)
    drive(engine, 70, in_flight=3, result=flaky)
    in_flight = [engine.ask(), engine.ask()]
    state = json.loads(json.dumps(engine.state_dict()))

    restored = make_engine(name, SPACE, OBJECTIVES, seed=12345)
    restored.load_state_dict(state)
    assert json.loads(json.dumps(restored.state_dict())) == state
    assert set(restored.pending) == {p.id for p in in_flight if p is not None}

    # The same results from here on give exactly the same proposals.
    for eng in (engine, restored):
        for p in reversed(in_flight):
            if p is not None:
                eng.tell(eng.pending[p.id], evaluate(p.arch))
    assert signature(drive(engine, 60, in_flight=2, result=flaky)) == signature(
        drive(restored, 60, in_flight=2, result=flaky)
    )
    assert [r.proposal.arch for r in engine.archive()] == [
        r.proposal.arch for r in restored.archive()
    ]


@pytest.mark.parametrize("name", ENGINES)
def test_state_of_another_engine_is_refused(name: str) -> None:
    engine = make_engine(name, SPACE, OBJECTIVES, seed=0)
    state = engine.state_dict()
    other = next((n for n in ENGINES if n != name), None)
    if other is not None:
        with pytest.raises(ValueError, match="state is for engine"):
            make_engine(other, SPACE, OBJECTIVES).load_state_dict(state)
    with pytest.raises(ValueError, match="version"):
        make_engine(name, SPACE, OBJECTIVES).load_state_dict({**state, "version": 999})


@pytest.mark.parametrize("name", ENGINES)
def test_pickle_round_trip(name: str) -> None:
    engine = make_engine(name, SPACE, OBJECTIVES, seed=4)
    drive(engine, 30, in_flight=2)
    clone = pickle.loads(pickle.dumps(engine))
    assert signature(drive(engine, 30)) == signature(drive(clone, 30))


@pytest.mark.parametrize("name", ENGINES)
def test_same_seed_same_proposals(name: str) -> None:
    runs = [drive(make_engine(name, SPACE, OBJECTIVES, seed=s), 80, in_flight=3) for s in (7, 7, 8)]
    assert signature(runs[0]) == signature(runs[1])
    assert [p.arch for p in runs[0]] != [p.arch for p in runs[2]]


@pytest.mark.parametrize("name", ENGINES)
@pytest.mark.parametrize("in_flight", [1, 4])
def test_all_failure_run_keeps_going(name: str, in_flight: int) -> None:
    engine = make_engine(name, SPACE, OBJECTIVES, seed=5)
    told = drive(engine, 60, in_flight=in_flight, result=lambda p: None)
    assert len(told) == 60  # never stopped: nothing was learnt, so nothing is done
    assert all(r.failed for r in engine.history)
    assert engine.archive() == [] and engine.successes() == []
    json.dumps(engine.state_dict())


@pytest.mark.parametrize("name", ENGINES)
@pytest.mark.parametrize("objectives", [OBJECTIVES, LIMITED], ids=["free", "limited"])
def test_archive_is_the_non_dominated_set(name: str, objectives: ObjectiveSet) -> None:
    engine = make_engine(name, SPACE, objectives, seed=6)
    drive(engine, 80, in_flight=3, result=lambda p: None if p.id % 7 == 0 else evaluate(p.arch))
    assert engine.archive()
    assert_archive_is_the_front(engine, objectives)


@pytest.mark.parametrize("name", ENGINES)
def test_all_infeasible_archive_is_the_least_violating(name: str) -> None:
    impossible = ObjectiveSet(
        (Objective("accuracy", "max", limit=1000.0), Objective("params", "min"))
    )
    engine = make_engine(name, SPACE, impossible, seed=9)
    drive(engine, 40)
    archive = engine.archive()
    best = max(r.values["accuracy"] for r in engine.successes())
    assert archive and all(r.values["accuracy"] == best for r in archive)


@pytest.mark.parametrize("name", ENGINES)
def test_restricted_space_is_respected(name: str) -> None:
    small = SPACE.restrict(
        {"e0_1": ["nor_conv_3x3", "skip_connect"], "e1_2": ["none"], "e2_3": ["avg_pool_3x3"]}
    )
    engine = make_engine(name, small, OBJECTIVES, seed=10)
    told = drive(engine, 60, in_flight=2)
    assert len(told) == 60
    assert all(small.contains(p.arch) for p in told)


@pytest.mark.parametrize("name", ENGINES)
def test_unknown_parameter_is_named(name: str) -> None:
    with pytest.raises(TypeError, match="no_such_knob"):
        make_engine(name, SPACE, OBJECTIVES, no_such_knob=1)


# ====================================================================== random search
TINY = SPACE.restrict([[0, 3], [1, 2, 4], [0], [2, 3], [4], [1]])  # 12 archs


def test_random_exhausts_the_space_without_repeats_then_stops() -> None:
    engine = RandomSearch(TINY, OBJECTIVES, seed=0)
    told = drive(
        engine, 100, in_flight=3, result=lambda p: None if p.id % 4 == 0 else evaluate(p.arch)
    )
    assert len(told) == TINY.size == 12
    assert {p.arch for p in told} == set(TINY)
    assert engine.ask() is None


def test_random_restores_mid_pool_and_draws_the_same() -> None:
    engine = RandomSearch(TINY, OBJECTIVES, seed=1)
    drive(engine, 7)  # more than half seen: drawing from the pool of the rest
    restored = RandomSearch(TINY, OBJECTIVES)
    restored.load_state_dict(json.loads(json.dumps(engine.state_dict())))
    assert signature(drive(engine, 10)) == signature(drive(restored, 10))


def test_random_first_draw_is_uniform() -> None:
    counts: dict[tuple, int] = {}
    for seed in range(1200):
        arch = RandomSearch(TINY, OBJECTIVES, seed=seed).ask().arch
        counts[arch] = counts.get(arch, 0) + 1
    assert set(counts) == set(TINY)
    assert min(counts.values()) > 60 and max(counts.values()) < 140  # expected 100 each


def test_unseen_sampler_counts_only_archs_inside_the_space() -> None:
    outside = (1, 1, 1, 1, 1, 1)
    sampler = UnseenSampler(TINY, [outside, *list(TINY)[:11]])
    assert sampler.num_seen_inside == 11 and not sampler.exhausted
    rng = np.random.default_rng(0)
    assert sampler.sample(rng) == list(TINY)[11]
    sampler.add(list(TINY)[11])
    assert sampler.exhausted and sampler.sample(rng) is None


# ====================================================================== regularized evolution
def test_evolution_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="population_size"):
        RegularizedEvolution(SPACE, OBJECTIVES, population_size=0)
    with pytest.raises(ValueError, match="sample_size"):
        RegularizedEvolution(SPACE, OBJECTIVES, sample_size=2.5)


def test_evolution_seeds_randomly_then_mutates_one_edit() -> None:
    engine = RegularizedEvolution(SPACE, OBJECTIVES, seed=0, population_size=8, sample_size=3)
    told = drive(engine, 60)
    assert [p.meta["phase"] for p in told[:8]] == ["random"] * 8
    archs = {p.id: p.arch for p in told}
    for p in told[8:]:
        assert p.meta["phase"] == "mutation" and p.meta["edits"] == 1
        parent = archs[p.meta["parent"]]
        assert sum(a != b for a, b in zip(parent, p.arch, strict=True)) == 1
        assert p.meta["generation"] >= 1
    assert len({p.arch for p in told}) == 60  # never repeats


def test_evolution_population_ages_in_arrival_order() -> None:
    engine = RegularizedEvolution(SPACE, OBJECTIVES, seed=1, population_size=5, sample_size=2)
    batch = [engine.ask() for _ in range(9)]  # nothing told yet: all random, ask never waits
    assert all(p is not None and p.meta["phase"] == "random" for p in batch)
    order = [batch[i] for i in (4, 0, 8, 2, 6, 1, 7, 3, 5)]
    for p in order:
        engine.tell(p, evaluate(p.arch))
    assert [r.proposal.id for r in engine.population] == [p.id for p in order[-5:]]
    assert engine.ask().meta["phase"] == "mutation"


def test_evolution_failures_never_join_the_population() -> None:
    engine = RegularizedEvolution(SPACE, OBJECTIVES, seed=2, population_size=4, sample_size=2)
    told = drive(engine, 10, result=lambda p: None if p.id < 6 else evaluate(p.arch))
    assert [p.meta["phase"] for p in told] == ["random"] * 10  # population filled only at the 10th
    assert [r.proposal.id for r in engine.population] == [6, 7, 8, 9]
    assert engine.ask().meta["phase"] == "mutation"


def _seeded(
    objectives: ObjectiveSet, values: list[dict[str, float]], seed: int
) -> tuple[Engine, list[Proposal]]:
    engine = RegularizedEvolution(
        SPACE, objectives, seed=seed, population_size=len(values), sample_size=len(values)
    )
    seeds = [engine.ask() for _ in values]
    for p, v in zip(seeds, values, strict=True):
        engine.tell(p, v)
    return engine, seeds


@pytest.mark.parametrize("seed", range(5))
def test_tournament_takes_the_first_rank(seed: int) -> None:
    values = [
        {"accuracy": 80.0, "params": 1.0},
        {"accuracy": 90.0, "params": 0.5},  # dominates every other member
        {"accuracy": 70.0, "params": 2.0},
        {"accuracy": 85.0, "params": 0.9},
    ]
    engine, seeds = _seeded(OBJECTIVES, values, seed)
    assert engine.ask().meta["parent"] == seeds[1].id


@pytest.mark.parametrize("seed", range(5))
def test_tournament_breaks_rank_ties_by_crowding(seed: int) -> None:
    values = [
        {"accuracy": 90.0, "params": 1.0},
        {"accuracy": 85.0, "params": 0.6},  # interior of the front: finite crowding
        {"accuracy": 80.0, "params": 0.5},
        {"accuracy": 70.0, "params": 2.0},  # dominated
    ]
    engine, seeds = _seeded(OBJECTIVES, values, seed)
    assert engine.ask().meta["parent"] in {seeds[0].id, seeds[2].id}


@pytest.mark.parametrize("seed", range(5))
def test_tournament_is_constrained(seed: int) -> None:
    values = [
        {"accuracy": 90.0, "params": 1.5},  # best objectives, violates params <= 1.0
        {"accuracy": 74.0, "params": 0.9},  # violates accuracy >= 75 less than the others
        {"accuracy": 76.0, "params": 0.8},  # the only feasible member
        {"accuracy": 60.0, "params": 0.1},
    ]
    engine, seeds = _seeded(LIMITED, values, seed)
    assert engine.ask().meta["parent"] == seeds[2].id
    infeasible = [values[i] for i in (0, 1, 3)]
    engine, seeds = _seeded(LIMITED, infeasible, seed)  # all infeasible: least violating wins
    assert engine.ask().meta["parent"] == seeds[1].id


@pytest.mark.parametrize("population_size", [1, 3])
def test_evolution_avoids_evaluated_archs_then_exhausts(population_size: int) -> None:
    small = SPACE.restrict([[0, 3, 4], [1, 2, 3], [0, 4, 2], [2], [4], [1]])  # 27 archs
    edits = []
    for seed in range(4):
        engine = RegularizedEvolution(small, OBJECTIVES, seed=seed, population_size=population_size)
        told: list[Proposal] = []
        while (p := engine.ask()) is not None:
            before = {q.arch for q in told}
            assert p.arch not in before
            if p.meta["phase"] == "mutation":
                parent = next(q.arch for q in told if q.id == p.meta["parent"])
                distance = sum(a != b for a, b in zip(parent, p.arch, strict=True))
                assert distance == p.meta["edits"]
                if distance == 2:  # only when every one-edit neighbour was already proposed
                    assert set(small.neighbors(parent)) <= before
                edits.append(distance)
            engine.tell(p, evaluate(p.arch))
            told.append(p)
        assert {p.arch for p in told} == set(small)
        assert engine.ask() is None
    assert edits.count(1) > edits.count(2) > 0


def test_evolution_beats_random_on_nb201(nb201_path) -> None:
    from benchmarks.nb201_bench import NB201Benchmark
    from paretune.objectives.nb201_table import load_table

    bench = NB201Benchmark(load_table(nb201_path), "acc-params")
    gaps: dict[str, list[float]] = {"random": [], "regularized_evolution": []}
    for name, found in gaps.items():
        for seed in range(8):
            engine = make_engine(name, bench.space, bench.objectives, seed=seed)
            archs = []
            for _ in range(300):
                p = engine.ask()
                engine.tell(p, bench.values(p.arch))
                archs.append(p.arch)
            found.append(bench.gap(archs))
    assert np.mean(gaps["regularized_evolution"]) < 0.8 * np.mean(gaps["random"])


# ====================================================================== every engine on every space
def _synthetic(sizes: list[int], name: str) -> SearchSpace:
    return SearchSpace(
        [Decision(f"d{k}", tuple(f"o{i}" for i in range(n))) for k, n in enumerate(sizes)],
        name=name,
    )


MIXED = _synthetic([2, 9, 3, 5, 4, 7, 2, 6, 8], "mixed")  # decisions of 2 to 9 options
WIDE = _synthetic([3, 2, 4] * 8, "wide")  # 24 decisions
SPACES_UNDER_TEST = {
    "nb201": SPACE,
    "darts": make_space("darts"),
    "mobilenet": make_space("mobilenet"),
    "macro": make_space("macro"),
    "choices": make_space("choices", decisions={"depth": [2, 3, 4], "width": [16, 32, 64]}),
    "mixed": MIXED,
    "wide": WIDE,
}


def generic_evaluate(space: SearchSpace) -> Callable[[Proposal], dict[str, float]]:
    """Larger options buy accuracy with parameters, with a deterministic wobble."""
    sizes = [len(d.options) for d in space.decisions]

    def result(p: Proposal) -> dict[str, float]:
        level = [i / max(1, n - 1) for i, n in zip(p.arch, sizes, strict=True)]
        wobble = sum((k + 1) * i for k, i in enumerate(p.arch)) % 7
        return {
            "accuracy": 60.0 + 30.0 * float(np.mean(np.sqrt(level))) + 0.3 * wobble,
            "params": 0.1 + float(np.sum(level)),
        }

    return result


@pytest.mark.parametrize("space_name", sorted(SPACES_UNDER_TEST))
@pytest.mark.parametrize("name", ENGINES)
def test_every_engine_runs_on_every_space(name: str, space_name: str) -> None:
    space = SPACES_UNDER_TEST[space_name]
    result = generic_evaluate(space)
    budget = min(120, space.size)

    def flaky(p: Proposal) -> dict[str, float] | None:
        return None if p.id % 9 == 4 else result(p)

    engine = make_engine(name, space, OBJECTIVES, seed=0)
    told = drive(engine, budget, in_flight=3, result=flaky)
    assert len(told) == budget
    assert len({p.arch for p in told}) == len(told)  # no architecture proposed twice
    for p in told:
        assert space.contains(p.arch) and isinstance(p.arch, tuple)
        assert space.decode(space.encode(p.arch)) == p.arch
        json.dumps(p.meta)
    assert_archive_is_the_front(engine, OBJECTIVES)
    # State round trip and determinism on this space.
    state = json.loads(json.dumps(engine.state_dict()))
    clone = make_engine(name, space, OBJECTIVES, seed=99)
    clone.load_state_dict(state)
    assert signature(drive(engine, 20, in_flight=2, result=result)) == signature(
        drive(clone, 20, in_flight=2, result=result)
    )
    twin = make_engine(name, space, OBJECTIVES, seed=0)
    assert signature(drive(twin, budget, in_flight=3, result=flaky)) == signature(told)


@pytest.mark.parametrize("name", ENGINES)
def test_small_space_is_exhausted_without_repeats(name: str) -> None:
    space = SPACES_UNDER_TEST["choices"]  # 9 architectures
    result = generic_evaluate(space)
    engine = make_engine(name, space, OBJECTIVES, seed=1)
    told = drive(engine, 30, in_flight=2, result=result)
    archs = [p.arch for p in told]
    assert len(set(archs)) == len(archs) <= 9


@pytest.mark.parametrize("space_name", sorted(SPACES_UNDER_TEST))
@pytest.mark.parametrize("name", ENGINES)
def test_every_engine_is_screened_on_every_space(name: str, space_name: str) -> None:
    from paretune.search_algos.screening import ScreenedEngine

    space = SPACES_UNDER_TEST[space_name]
    result = generic_evaluate(space)
    limited = ObjectiveSet(
        (
            Objective("accuracy", "max"),
            Objective("params", "min", limit=0.1 + space.num_decisions / 3),
        )
    )
    inner = make_engine(name, space, limited, seed=2)
    screened = ScreenedEngine(inner, lambda arch: result(Proposal(0, arch))["params"], margin=0.0)
    budget = min(40, space.size)
    drive(screened, budget, in_flight=2, result=result)
    trials = [r for r in screened.history if not r.failed]
    assert trials and all(space.contains(r.proposal.arch) for r in screened.history)
    for r in trials:  # handed out: within the limit, or forced after max_screens
        assert r.values["params"] <= limited["params"].limit or r.proposal.meta.get("screen")
    assert screened.num_screened == len(screened.screened_records()) > 0
