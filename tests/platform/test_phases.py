"""The weight-sharing phase hook: which config runs which phase, and its record in the state."""

from __future__ import annotations

import json
import sys
import types

import pytest

from paretune.platform import phases
from paretune.platform.config import ExperimentConfig

_OBJECTIVES = [{"name": "accuracy", "direction": "max"}, {"name": "params", "direction": "min"}]


def _config(**search) -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {
            "name": "p",
            "search": {"algorithm": "tnd", **search},
            "evaluator": {"kind": "train"},
            "objectives": _OBJECTIVES,
        }
    )


def test_phase_names_follow_the_config():
    assert phases.phase_name(_config()) is None
    assert phases.phase_name(_config(mode="supernet")) == "tnd_supernet"
    cfg = _config(algorithm="pertnas", mode="supernet")
    assert phases.phase_name(cfg) == "pertnas_supernet"
    assert set(phases.PHASES) >= {"tnd_supernet", "pertnas_supernet", "supernet_training"}


def test_run_phase_hands_over_and_records_it_once(monkeypatch, tmp_path):
    calls = []

    class FakePhase:
        name = "tnd_supernet"

        def __init__(self, config):
            self.config = config

        def run(self, prepared, searcher, experiment_dir, state, *, verbose=1):
            calls.append(experiment_dir)
            return ("prepared after", "searcher after")

    module = types.ModuleType("fake_phase_module")
    module.make_phase = FakePhase
    monkeypatch.setitem(sys.modules, "fake_phase_module", module)
    monkeypatch.setitem(phases.PHASES, "tnd_supernet", "fake_phase_module:make_phase")
    prepared = types.SimpleNamespace(config=_config(mode="supernet"))
    state: dict = {"run_name": "p"}
    for _ in range(2):  # a resume calls it again: recorded once
        out = phases.run_phase(prepared, "searcher", tmp_path, state)
        assert out == ("prepared after", "searcher after")
    assert calls == [tmp_path, tmp_path]
    assert state["phases_done"] == ["tnd_supernet"]
    on_disk = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert on_disk["phases_done"] == ["tnd_supernet"]


def test_no_phase_leaves_everything_as_it_was(tmp_path):
    prepared = types.SimpleNamespace(config=_config())
    state: dict = {}
    assert phases.run_phase(prepared, "s", tmp_path, state) == (prepared, "s")
    assert state == {}
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("algorithm", ["random", "regularized_evolution", "nsga2"])
def test_supernet_mode_is_refused_for_other_algorithms(algorithm):
    from paretune.platform.config import ConfigError, config_from_dict

    with pytest.raises((ConfigError, ValueError), match="search.mode = 'supernet'"):
        config_from_dict(
            {
                "name": "p",
                "search": {"algorithm": algorithm, "mode": "supernet"},
                "objectives": _OBJECTIVES,
            }
        )
