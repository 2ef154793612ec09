"""Latency-limited search on the NB201 table: limits in the report, predictor screening."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from paretune.objectives.base import Objective, ObjectiveSet
from paretune.objectives.table import TableEvaluator
from paretune.search_algos.base import Engine, SearchEngine
from paretune.search_algos.evolution import RegularizedEvolution
from paretune.search_algos.random_search import RandomSearch
from paretune.search_algos.screening import SCREEN_PREFIX, ScreenedEngine, screen_engine
from paretune.spaces.nb201 import NB201Space

SPACE = NB201Space()
_LATENCY: dict[tuple[int, ...], float] = {}
_ACCURACY: dict[tuple[int, ...], float] = {}


@pytest.fixture(scope="module", autouse=True)
def table(nb201_path):
    """Valid accuracy and Pixel 3 latency of every architecture, for fast look-ups."""
    ev = TableEvaluator(nb201_path, latency_device="pixel3")
    values, archs = ev.matrix(["accuracy", "latency"])
    _ACCURACY.update(zip(archs, values[:, 0].tolist(), strict=True))
    _LATENCY.update(zip(archs, values[:, 1].tolist(), strict=True))
    return ev


def table_latency(arch) -> float:
    """An exact 'predictor': the table's latency (module level, so it pickles)."""
    return _LATENCY[tuple(arch)]


def limit_at(quantile: float) -> float:
    return float(np.quantile(list(_LATENCY.values()), quantile))


def objectives(limit: float) -> ObjectiveSet:
    return ObjectiveSet((Objective("accuracy", "max"), Objective("latency", "min", limit=limit)))


def values(arch) -> dict[str, float]:
    return {"accuracy": _ACCURACY[arch], "latency": _LATENCY[arch]}


def drive(engine, trials: int) -> list:
    """Ask/tell ``trials`` proposals against the table; returns the proposals handed out."""
    handed = []
    for _ in range(trials):
        proposal = engine.ask()
        assert proposal is not None
        handed.append(proposal)
        engine.tell(proposal, values(proposal.arch))
    return handed


def test_exact_predictor_screens_out_every_infeasible_candidate():
    limit = limit_at(0.3)  # 30% of the space is within the limit
    engine = ScreenedEngine(
        RandomSearch(SPACE, objectives(limit), seed=1), table_latency, margin=0.0
    )
    assert engine.objective == "latency" and engine.limit == limit and engine.threshold == limit
    handed = drive(engine, 40)
    assert all(_LATENCY[p.arch] <= limit for p in handed)  # no trial on an infeasible arch
    screened = engine.screened_records()
    assert len(screened) == engine.num_screened > 20  # most candidates are screened out
    assert all(_LATENCY[r.proposal.arch] > limit for r in screened)
    assert all(
        r.error.startswith(SCREEN_PREFIX) and "beyond the limit" in r.error for r in screened
    )
    assert engine.num_passed == 40 and engine.num_forced == 0 and not engine.pending
    # the inner engine saw them as failures: its history has trials + screened, no repeats
    assert len(engine.history) == 40 + len(screened)
    assert len({r.proposal.arch for r in engine.history}) == len(engine.history)
    assert all(p.meta["predicted_latency"] == _LATENCY[p.arch] for p in handed)


def test_margin_max_screens_and_switch_bound_the_screening():
    limit = limit_at(0.5)

    def hopeless(arch) -> float:
        return 10 * limit

    engine = ScreenedEngine(RandomSearch(SPACE, objectives(limit), seed=0), hopeless, max_screens=3)
    first = engine.ask()  # screened 3 times, then handed out anyway: the search never stalls
    assert first is not None and engine.num_screened == 3 and engine.num_forced == 1
    assert first.meta["screen"].startswith("over the limit")
    none = ScreenedEngine(RandomSearch(SPACE, objectives(limit), seed=0), hopeless, max_screens=0)
    assert none.ask() is not None and none.num_screened == 0
    off = ScreenedEngine(RandomSearch(SPACE, objectives(limit), seed=0), hopeless, enabled=False)
    p = off.ask()
    assert off.num_screened == 0 and p.meta["predicted_latency"] == 10 * limit
    # a margin lets near misses through: 10% over the limit passes a 20% margin
    near = ScreenedEngine(
        RandomSearch(SPACE, objectives(limit), seed=0), lambda a: 1.1 * limit, margin=0.2
    )
    assert near.ask() is not None and near.num_screened == 0
    assert not near.hopeless(1.2 * limit) and near.hopeless(1.21 * limit)


def test_a_failing_predictor_does_not_stop_the_search():
    def broken(arch) -> float:
        raise RuntimeError("no predictor file")

    engine = ScreenedEngine(RandomSearch(SPACE, objectives(limit_at(0.5)), seed=0), broken)
    p = engine.ask()
    assert p is not None and p.meta["screen_error"] == "RuntimeError: no predictor file"


def test_settings_are_checked():
    free = ObjectiveSet.of(("accuracy", "max"), ("latency", "min"))
    with pytest.raises(ValueError, match="no objective has a limit"):
        ScreenedEngine(RandomSearch(SPACE, free), table_latency)
    with pytest.raises(ValueError, match=r"'energy': not an objective \(allowed: \['accuracy'"):
        ScreenedEngine(RandomSearch(SPACE, objectives(5.0)), table_latency, objective="energy")
    with pytest.raises(ValueError, match="margin = -0.1"):
        ScreenedEngine(RandomSearch(SPACE, objectives(5.0)), table_latency, margin=-0.1)
    with pytest.raises(ValueError, match="max_screens = 1.5"):
        ScreenedEngine(RandomSearch(SPACE, objectives(5.0)), table_latency, max_screens=1.5)
    engine = RandomSearch(SPACE, objectives(5.0))
    assert screen_engine(engine, table_latency, {"enabled": False}) is engine
    assert screen_engine(engine, None, None) is engine
    with pytest.raises(ValueError, match="needs a predictor"):
        screen_engine(engine, None, {"enabled": True})
    screened = screen_engine(
        engine, table_latency, {"enabled": True, "objective": None, "margin": 0.0, "max_screens": 5}
    )
    assert isinstance(screened, ScreenedEngine) and screened.max_screens == 5


def test_state_round_trip_continues_identically():
    limit = limit_at(0.3)

    def make():
        inner = RegularizedEvolution(
            SPACE, objectives(limit), seed=3, population_size=8, sample_size=3
        )
        return ScreenedEngine(inner, table_latency, margin=0.0)

    a = make()
    drive(a, 15)
    state = json.loads(json.dumps(a.state_dict()))  # plain JSON data
    b = make()
    b.load_state_dict(state)
    assert (b.num_screened, b.num_passed) == (a.num_screened, a.num_passed)
    assert [p.arch for p in drive(a, 10)] == [p.arch for p in drive(b, 10)]
    with pytest.raises(ValueError, match="state is for engine 'random'"):
        b.load_state_dict(RandomSearch(SPACE, objectives(limit)).state_dict())


def test_ray_searcher_pickles_a_screened_engine_by_its_state():
    from paretune.platform.searcher import ParetoSearcher

    engine = ScreenedEngine(
        RandomSearch(SPACE, objectives(limit_at(0.3)), seed=2), table_latency, margin=0.0
    )
    searcher = ParetoSearcher(engine)
    config = searcher.suggest("t1")
    arch = SPACE.decode(config["arch"])
    assert _LATENCY[arch] <= engine.limit
    searcher.on_trial_complete("t1", {**values(arch)})
    clone = pickle.loads(pickle.dumps(searcher))
    assert isinstance(clone.engine, ScreenedEngine)
    assert clone.engine.state_dict() == searcher.engine.state_dict()
    assert clone.suggest("t2") == searcher.suggest("t2")


@pytest.mark.parametrize("engine_cls", [RandomSearch, RegularizedEvolution])
def test_reported_front_respects_the_limit(engine_cls):
    from paretune.platform.report import TrialRow, build_report

    limit = limit_at(0.2)
    objs = objectives(limit)
    kwargs = {"population_size": 10, "sample_size": 3} if engine_cls is RegularizedEvolution else {}
    engine = engine_cls(SPACE, objs, seed=4, **kwargs)
    handed = drive(engine, 60)
    rows = [
        TrialRow(str(i), i, SPACE.encode(p.arch), values(p.arch), True)
        for i, p in enumerate(handed)
    ]
    report = build_report(rows, objs)
    assert any(r.values["latency"] > limit for r in rows)  # infeasible ones were evaluated
    assert report.front and all(r.values["latency"] <= limit for r in report.front)
    assert all(r.values["latency"] <= limit for r in engine.archive())
    # the unconstrained front of the same trials would hold an infeasible (fast) one
    free = build_report(rows, ObjectiveSet.of(("accuracy", "max"), ("latency", "min")))
    assert any(r.values["latency"] > limit for r in free.front)
    # nothing feasible: the least-violating trials form the front
    strict = objectives(0.001)
    least = build_report(rows, strict)
    best = min(r.values["latency"] for r in rows)
    assert [r.values["latency"] for r in least.front] == [best]


def test_config_sections_for_predictor_and_screening(tmp_path):
    from paretune.platform.config import ConfigError, config_from_dict

    base = {
        "name": "limited",
        "evaluator": {"kind": "table"},
        "objectives": [
            {"name": "accuracy", "direction": "max"},
            {"name": "latency", "direction": "min", "limit": 8.0},
        ],
    }
    cfg = config_from_dict(
        {**base, "predictor": {"path": "runs:/abc/latency_predictor", "device": "pixel3"},
         "screening": {"enabled": True, "margin": 0.05}}
    )  # fmt: skip
    assert cfg.screening.enabled and cfg.predictor.metric == "predicted_latency"
    engine = screen_engine(
        RandomSearch(SPACE, cfg.objective_set()),
        table_latency,
        cfg.screening.model_dump(exclude={"enabled"}) | {"enabled": True},
    )
    assert engine.objective == "latency" and engine.limit == 8.0 and engine.margin == 0.05
    with pytest.raises(ConfigError, match="needs predictor.path"):
        config_from_dict({**base, "screening": {"enabled": True}})
    with pytest.raises(ConfigError, match=r"'accuracy': not an objective with a limit"):
        config_from_dict(
            {
                **base,
                "predictor": {"path": "p"},
                "screening": {"enabled": True, "objective": "accuracy"},
            }
        )
    with pytest.raises(ConfigError, match=r"works with paretune engines, not search.algorithm"):
        config_from_dict(
            {**base, "predictor": {"path": "p"}, "screening": {"enabled": True},
             "search": {"algorithm": "nsga2"}}
        )  # fmt: skip
    with pytest.raises(ConfigError, match=r"screening.margin = -1"):
        config_from_dict({**base, "screening": {"margin": -1}})
    with pytest.raises(ConfigError, match=r"predictor.devise: unknown key"):
        config_from_dict({**base, "predictor": {"devise": "x"}})


def test_wraps_the_engine_by_composition():
    inner = RandomSearch(SPACE, objectives(limit_at(0.3)), seed=2)
    engine = ScreenedEngine(inner, table_latency, margin=0.0)
    assert not isinstance(engine, Engine) and engine.inner is inner
    members = [m for m in dir(SearchEngine) if not m.startswith("_")] + ["init_args", "name"]
    assert {"ask", "tell", "state_dict", "space"} <= set(members)
    for member in members:
        assert hasattr(engine, member), member
    assert engine.space is inner.space and engine.history is inner.history
    proposal = engine.ask()
    assert engine.tell(proposal, {"accuracy": 0.5, "latency": 0.1}) is True
    assert engine.tell(proposal, {"accuracy": 0.5, "latency": 0.1}) is False  # told once
    assert engine.num_told == inner.num_told == len(inner.history)
