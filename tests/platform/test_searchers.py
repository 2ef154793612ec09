"""Conformance of every searcher paretune offers through Ray Tune (Syne Tune-style).

Each searcher is driven through Ray's ``Searcher`` callbacks without running trials: suggest,
complete with a result, fail, save/restore, pickle round trip, same seed -> same proposals.
"""

from __future__ import annotations

import math
import pickle

import pytest
from ray.tune.search import Searcher

from paretune.objectives.base import Objective, ObjectiveSet
from paretune.platform.config import OPTUNA_ALGORITHMS
from paretune.platform.searcher import ParetoSearcher, make_optuna_searcher
from paretune.platform.trainable import arch_from_config
from paretune.search_algos import engine_names, make_engine
from paretune.spaces import NB201Space

OBJECTIVES = ObjectiveSet.of(("accuracy", "max"), ("params", "min"))


def _slow_gp(names):
    """Optuna's GP fits a model per proposal (minutes for these tests on 2 cores): slow tier."""
    return [pytest.param(n, marks=pytest.mark.slow) if n == "gp" else n for n in names]


SEARCHERS = _slow_gp([*engine_names(), *OPTUNA_ALGORITHMS])


def synthetic_values(arch: tuple[int, ...]) -> dict[str, float]:
    """A deterministic two-objective toy: conv ops raise both accuracy and parameters."""
    convs = sum(1 for i in arch if i in (2, 3))
    return {
        "accuracy": 80.0 + 2.0 * convs - 0.5 * arch.count(0),
        "params": 0.1 + 0.2 * convs + 0.01 * sum(arch),
    }


def make_searcher(name: str, seed: int = 0) -> Searcher:
    space = NB201Space()
    if name in OPTUNA_ALGORITHMS:
        return make_optuna_searcher(name, space, OBJECTIVES, seed=seed)
    return ParetoSearcher(make_engine(name, space, OBJECTIVES, seed=seed))


def drive(searcher: Searcher, n: int, start: int = 0, fail_every: int = 0) -> list[str]:
    """Suggest and complete ``n`` trials in order; returns the architecture strings."""
    space = NB201Space()
    archs = []
    for k in range(start, start + n):
        tid = f"t_{k:05d}"
        config = searcher.suggest(tid)
        if config is None or config == Searcher.FINISHED:
            break
        arch = arch_from_config(space, config)
        archs.append(space.encode(arch))
        if fail_every and k % fail_every == fail_every - 1:
            searcher.on_trial_complete(tid, None, error=True)
        else:
            searcher.on_trial_complete(tid, synthetic_values(arch))
    return archs


@pytest.mark.parametrize("name", SEARCHERS)
def test_suggest_returns_valid_architectures(name):
    searcher = make_searcher(name)
    space = NB201Space()
    config = searcher.suggest("t_00000")
    assert isinstance(config, dict)
    arch = arch_from_config(space, config)
    assert space.contains(arch)
    assert searcher.metric == OBJECTIVES.names
    assert searcher.mode == OBJECTIVES.modes


@pytest.mark.parametrize("name", SEARCHERS)
def test_same_seed_same_proposals(name):
    a = drive(make_searcher(name, seed=3), 25)
    b = drive(make_searcher(name, seed=3), 25)
    c = drive(make_searcher(name, seed=4), 25)
    assert a == b
    assert a != c


@pytest.mark.parametrize("name", SEARCHERS)
def test_failures_do_not_stop_the_search(name):
    searcher = make_searcher(name)
    archs = drive(searcher, 30, fail_every=3)
    assert len(archs) == 30
    if isinstance(searcher, ParetoSearcher):
        failed = [r for r in searcher.engine.history if r.failed]
        assert len(failed) == 10
        assert all(r.values is None for r in failed)


@pytest.mark.parametrize("name", SEARCHERS)
def test_save_restore_continues_identically(name, tmp_path):
    original = make_searcher(name, seed=1)
    drive(original, 20)
    path = tmp_path / "searcher.ckpt"
    original.save(str(path))
    restored = make_searcher(name, seed=99)  # a different seed: the state must win
    restored.restore(str(path))
    assert drive(original, 15, start=20) == drive(restored, 15, start=20)


@pytest.mark.parametrize("name", SEARCHERS)
def test_pickle_round_trip(name):
    original = make_searcher(name, seed=2)
    drive(original, 12)
    live = original.suggest("t_live")  # one trial in flight survives the round trip
    clone = pickle.loads(pickle.dumps(original))
    if isinstance(original, ParetoSearcher):
        assert clone.engine.state_dict() == original.engine.state_dict()
        assert set(clone.live_trials) == {"t_live"}
    space = NB201Space()
    arch = arch_from_config(space, live)
    for s in (original, clone):
        s.on_trial_complete("t_live", synthetic_values(arch))
    assert drive(original, 10, start=12) == drive(clone, 10, start=12)


@pytest.mark.parametrize("name", engine_names())
def test_nan_and_missing_results_become_failures(name):
    searcher = make_searcher(name)
    space = NB201Space()
    c1, c2, c3 = (searcher.suggest(f"t_{k}") for k in range(3))
    searcher.on_trial_complete("t_0", {"accuracy": math.nan, "params": 1.0})
    searcher.on_trial_complete("t_1", {"accuracy": 90.0})
    searcher.on_trial_complete("t_2", synthetic_values(arch_from_config(space, c3)))
    history = searcher.engine.history
    assert [r.failed for r in history] == [True, True, False]
    assert "non-finite" in history[0].error


def test_pareto_searcher_finishes_when_engine_is_exhausted():
    space = NB201Space().restrict(
        {
            "e0_1": ["none"],
            "e0_2": ["none"],
            "e0_3": ["none"],
            "e1_2": ["none"],
            "e1_3": ["skip_connect", "none"],
            "e2_3": ["none"],
        }
    )
    searcher = ParetoSearcher(make_engine("random", space, OBJECTIVES, seed=0))
    assert len(drive(searcher, 10)) == 2
    assert searcher.suggest("t_last") == Searcher.FINISHED


@pytest.mark.parametrize("algorithm", _slow_gp(OPTUNA_ALGORITHMS))
def test_optuna_searchers_see_limits_as_constraints(algorithm, tmp_path):
    limited = ObjectiveSet.of(("accuracy", "max"), Objective("params", "min", limit=0.5))
    searcher = make_optuna_searcher(algorithm, NB201Space(), limited, seed=0)
    drive(searcher, 6)
    trials = searcher._ot_study.get_trials()
    assert len(trials) == 6
    for t in trials:
        params = synthetic_values(arch_from_config(NB201Space(), t.params))["params"]
        assert list(t.constraints.values()) == [pytest.approx(max(0.0, params - 0.5))]
    path = tmp_path / "optuna.pkl"
    searcher.save(str(path))  # the constraint function must survive Ray's pickling
    clone = pickle.loads(pickle.dumps(searcher))
    assert drive(clone, 3, start=6)


def test_children_get_their_parents_weights_to_inherit():
    searcher = ParetoSearcher(
        make_engine("regularized_evolution", NB201Space(), OBJECTIVES, seed=0, population_size=4)
    )
    space = NB201Space()
    for k in range(4):  # seed the population; each result names its weights file
        config = searcher.suggest(f"t_{k}")
        result = synthetic_values(arch_from_config(space, config))
        searcher.on_trial_complete(
            f"t_{k}", {**result, "weights_path": f"/shared/trials/t_{k}/weights.pt"}
        )
    child = searcher.suggest("t_child")
    parent = child["proposal"]["meta"]["parent"]
    assert child["proposal"]["meta"]["parent_checkpoint"] == f"/shared/trials/t_{parent}/weights.pt"
    clone = pickle.loads(pickle.dumps(searcher))  # the map survives save/restore
    assert clone._weights == searcher._weights


@pytest.mark.parametrize("name", engine_names())
def test_event_log_restores_what_the_snapshot_missed(name, tmp_path):
    """A driver dies after Ray's snapshot: the event log brings the engine to the kill."""
    space = NB201Space()
    events = tmp_path / "events.jsonl"

    def searcher(seed: int) -> ParetoSearcher:
        engine = make_engine(name, space, OBJECTIVES, seed=seed)
        return ParetoSearcher(engine, max_trials=30, events_path=events)

    def finish(s: ParetoSearcher, tid: str, config: dict) -> None:
        s.on_trial_complete(tid, synthetic_values(arch_from_config(space, config)))

    original = searcher(seed=1)
    drive(original, 10)
    in_flight = {f"a_{k}": original.suggest(f"a_{k}") for k in range(2)}  # Ray knows these
    original.save_to_dir(str(tmp_path), "snap")  # Ray's snapshot
    orphans = {f"b_{k}": original.suggest(f"b_{k}") for k in range(4)}  # Ray never saw these
    finish(original, "b_0", orphans["b_0"])
    finish(original, "a_0", in_flight["a_0"])
    original.on_trial_complete("b_1", None, error=True)
    # killed here: b_2 and b_3 were running

    restored = searcher(seed=99)  # the state must win over the seed
    restored.restore_from_dir(str(tmp_path))
    assert restored.engine.state_dict()["history"] == original.engine.state_dict()["history"]
    assert set(restored.live_trials) == {"a_1"}  # Ray re-runs it under its own id
    # The unfinished orphans are handed out again, first, under new trial ids.
    again = [restored.suggest(f"c_{k}") for k in range(2)]
    assert [c["proposal"]["id"] for c in again] == [
        orphans[t]["proposal"]["id"] for t in ("b_2", "b_3")
    ]
    assert [c["arch"] for c in again] == [orphans[t]["arch"] for t in ("b_2", "b_3")]
    # Distinct proposals never exceed max_trials: 10 + 2 + 4 handed out, 14 more to go.
    finish(restored, "a_1", in_flight["a_1"])
    for tid, config in zip(("c_0", "c_1"), again, strict=True):
        finish(restored, tid, config)
    assert len(drive(restored, 100, start=100)) == 14
    assert restored.suggest("z") == Searcher.FINISHED
    ids = [r.proposal.id for r in restored.engine.history]
    assert len(ids) == len(set(ids)) == 30


def test_event_log_that_diverges_is_cut_where_it_diverges(tmp_path):
    space = NB201Space()
    events = tmp_path / "events.jsonl"
    original = ParetoSearcher(make_engine("random", space, OBJECTIVES, seed=1), 30, events)
    drive(original, 3)
    original.save_to_dir(str(tmp_path), "snap")
    drive(original, 3, start=3)
    lines = events.read_text().splitlines()
    # Another engine (different seed in the snapshot) cannot reproduce the logged asks.
    other = ParetoSearcher(make_engine("random", space, OBJECTIVES, seed=2), 30, events)
    drive(other, 3)
    other.save_to_dir(str(tmp_path), "snap")
    events.write_text("\n".join(lines) + "\n")
    restored = ParetoSearcher(make_engine("random", space, OBJECTIVES, seed=3), 30, events)
    restored.restore_from_dir(str(tmp_path))
    assert len(restored.engine.history) == 3
    assert len(events.read_text().splitlines()) == 6  # the snapshot's own events only


def test_an_unreadable_event_log_line_is_reported(tmp_path, caplog):
    space = NB201Space()
    events = tmp_path / "events.jsonl"
    original = ParetoSearcher(make_engine("random", space, OBJECTIVES, seed=1), 30, events)
    drive(original, 2)
    original.save_to_dir(str(tmp_path), "snap")
    drive(original, 2, start=2)
    lines = events.read_text().splitlines()
    lines[5] = lines[5][:10]  # a torn line after the snapshot's four events
    events.write_text("\n".join(lines) + "\n")
    restored = ParetoSearcher(make_engine("random", space, OBJECTIVES, seed=1), 30, events)
    restored.restore_from_dir(str(tmp_path))
    assert f"{events} line 6: cannot be read" in caplog.text
    assert len(restored.engine.history) == 2  # the events before it are replayed


@pytest.mark.slow
def test_gp_searcher_models_limits_as_constraints():
    """Past its random start, ``gp`` proposes from a model of the objectives and of the limit:
    the constraint values are recorded per trial and change what it proposes."""
    limited = ObjectiveSet.of(("accuracy", "max"), Objective("params", "min", limit=0.5))
    space = NB201Space()

    def run(objectives: ObjectiveSet) -> tuple[list[str], Searcher]:
        searcher = make_optuna_searcher("gp", space, objectives, seed=0, n_startup_trials=4)
        return drive(searcher, 8), searcher

    constrained, searcher = run(limited)
    plain, _ = run(OBJECTIVES)
    assert constrained[:4] == plain[:4]  # the same seeded random start
    assert constrained[4:] != plain[4:]  # the limit steers the model-based proposals
    trials = searcher._ot_study.get_trials()
    assert len(trials) == 8
    for t in trials:
        params = synthetic_values(arch_from_config(space, t.params))["params"]
        assert list(t.constraints.values()) == [pytest.approx(max(0.0, params - 0.5))]
