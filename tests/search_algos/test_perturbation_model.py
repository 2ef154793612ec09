"""PertNAS model proposals: the additive model's share, its constant liar and old states."""

from __future__ import annotations

import json

import numpy as np

from paretune.search_algos.pareto import hypervolume
from tests.search_algos.test_engines import drive
from tests.search_algos.test_perturbation import SPACE, TRADE, pertnas, run, trade


def _points(told) -> np.ndarray:
    vals = [trade(p.arch) for p in told]
    return np.array([[-v["accuracy"], v["params"]] for v in vals])


def test_model_proposals_start_after_model_start_and_fade_out() -> None:
    engine = pertnas(TRADE, 3, model_start=12, model_until=60)
    told = run(engine, 90, trade)
    model = [i for i, p in enumerate(told) if p.meta["phase"] == "model"]
    assert model and min(model) >= 12 and max(model) < 60 + 1
    assert all(told[i].meta["parent"] is None for i in model)
    off = pertnas(TRADE, 3, model_fraction=0.0)
    assert "model" not in {p.meta["phase"] for p in run(off, 90, trade)}


def test_model_proposals_help_on_an_additive_trade_off() -> None:
    """On an exactly additive problem the first 40 results cover more of the front (12 seeds)."""
    ref = np.array([-55.0, 12.0])
    gains = []
    for seed in range(12):
        on = hypervolume(_points(run(pertnas(TRADE, seed), 40, trade)), ref)
        off = hypervolume(_points(run(pertnas(TRADE, seed, model_fraction=0.0), 40, trade)), ref)
        gains.append(on - off)
    assert np.mean(gains) > 0


def test_proposals_in_flight_are_claimed() -> None:
    """With 8 in flight the model never proposes what is pending, and spreads its proposals."""
    engine = pertnas(TRADE, 5, model_fraction=1.0, model_start=10)
    run(engine, 20, trade)
    asked = [engine.ask() for _ in range(8)]
    model = [p for p in asked if p.meta["phase"] == "model"]
    assert len(model) >= 4
    assert len({p.arch for p in asked}) == len(asked)
    # predicted points of the pending model proposals are distinct (not one point piled on)
    assert len({tuple(np.round(_points(model)[i], 6)) for i in range(len(model))}) > 1


def test_a_state_saved_before_model_proposals_continues_without_them() -> None:
    engine = pertnas(TRADE, 2, model_fraction=0.0)
    drive(engine, 30, in_flight=2, result=lambda p: trade(p.arch))
    state = json.loads(json.dumps(engine.state_dict()))
    inner = state["engine_state"]
    for key in ("model_fraction", "model_start", "model_exploration", "model_horizon"):
        inner["params"].pop(key)
    inner["params"].pop("model_until")
    inner.pop("model_credit")
    restored = pertnas(TRADE, 99)
    restored.load_state_dict(state)
    assert restored.params["model_fraction"] == 0.0
    told = drive(restored, 30, in_flight=2, result=lambda p: trade(p.arch))
    assert "model" not in {p.meta["phase"] for p in told}
    assert restored.space is not None and SPACE.num_decisions == restored.space.num_decisions
