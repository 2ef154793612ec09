"""Duplicate networks (one network, several architectures) are measured once, on every engine."""

from __future__ import annotations

import json
import pickle

import pytest

from paretune.objectives.base import ObjectiveSet
from paretune.search_algos import Proposal, engine_names, make_engine
from paretune.search_algos.dedup import DeduplicatedEngine, deduplicate, has_duplicates
from paretune.search_algos.screening import ScreenedEngine
from paretune.spaces import NB201Space, make_space
from tests.search_algos.test_engines import drive, generic_evaluate, signature

OBJECTIVES = ObjectiveSet.of(("accuracy", "max"), ("params", "min"))
MACRO = make_space("macro")


def network_evaluate(space):
    """Values depend on the network only (the canonical architecture)."""
    base = generic_evaluate(space)
    return lambda p: base(Proposal(p.id, space.canonical(p.arch)))


def test_only_spaces_with_duplicates_are_wrapped() -> None:
    assert has_duplicates(MACRO) and has_duplicates(make_space("mobilenet"))
    assert not has_duplicates(NB201Space()) and not has_duplicates(make_space("darts"))
    nb201 = make_engine("random", NB201Space(), OBJECTIVES)
    assert deduplicate(nb201) is nb201
    assert isinstance(deduplicate(make_engine("random", MACRO, OBJECTIVES)), DeduplicatedEngine)


@pytest.mark.parametrize(
    ("name", "space_name"),
    [  # pertnas on mobilenet takes ~11 s: slow tier
        pytest.param(n, s, marks=pytest.mark.slow) if (n, s) == ("pertnas", "mobilenet") else (n, s)
        for s in ("macro", "mobilenet")
        for n in engine_names()
    ],
)
def test_each_network_is_measured_once(name: str, space_name: str) -> None:
    space = make_space(space_name)
    result = network_evaluate(space)
    engine = deduplicate(make_engine(name, space, OBJECTIVES, seed=0))
    trials = drive(engine, 150, in_flight=1, result=result)
    networks = [space.canonical(p.arch) for p in trials]
    assert len(set(networks)) == len(networks)  # no network measured twice
    filled = engine.filled_records()
    assert len(filled) == engine.num_filled
    for r in filled:  # answered with the values of the measured twin
        twin = next(t for t in engine.history if t.proposal.id == r.proposal.meta["duplicate_of"])
        assert space.canonical(twin.proposal.arch) == space.canonical(r.proposal.arch)
        assert r.values == twin.values
    # the archive is built from everything told, twins included
    assert {r.proposal.id for r in engine.archive()} <= {r.proposal.id for r in engine.history}
    # state round trip, determinism, pickling of the constructor arguments
    state = json.loads(json.dumps(engine.state_dict()))
    clone = DeduplicatedEngine(*engine.init_args[0], **engine.init_args[1])
    clone.load_state_dict(state)
    assert clone.num_filled == engine.num_filled
    assert signature(drive(engine, 20, result=result)) == signature(drive(clone, 20, result=result))
    pickle.loads(pickle.dumps(engine.init_args))


def test_macro_random_search_fills_twins_and_stops_at_the_space() -> None:
    engine = deduplicate(make_engine("random", MACRO, OBJECTIVES, seed=3))
    trials = drive(engine, 10_000, in_flight=4, result=network_evaluate(MACRO))
    assert len(engine.history) == MACRO.size  # every architecture answered, then None
    assert len(trials) + engine.num_filled == MACRO.size
    assert len(trials) >= 3969  # twins in flight at once may each be measured
    assert engine.ask() is None


def test_dedup_wraps_a_screened_engine_and_refuses_other_states() -> None:
    space = make_space("mobilenet")
    result = network_evaluate(space)
    limited = ObjectiveSet.of(("accuracy", "max"), ("params", "min"))
    inner = ScreenedEngine(
        make_engine("regularized_evolution", space, limited, seed=1),
        lambda arch: result(Proposal(0, arch))["params"],
        objective="params",
        limit=20.0,
    )
    engine = DeduplicatedEngine(inner)
    drive(engine, 60, in_flight=2, result=result)
    assert engine.num_screened >= 0 and engine.history
    with pytest.raises(ValueError, match="state is for engine"):
        engine.load_state_dict(inner.state_dict())
    with pytest.raises(ValueError, match="max_fills"):
        DeduplicatedEngine(inner, max_fills=-1)
