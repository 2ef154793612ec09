"""benchmarks/inflight_run.py: the run config carries search_quality's objective set."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from benchmarks.inflight_run import run_config
from benchmarks.nb201_bench import bench_objectives
from paretune.platform.config_loading import load_config


@pytest.mark.parametrize(
    ("objective_set", "evaluator", "names"),
    [
        (
            "acc-lat-energy",
            {"latency_device": "pixel3", "energy_device": "pi5_onnx"},
            ["accuracy", "latency", "energy"],
        ),
        ("acc-params", {}, ["accuracy", "params"]),
    ],
)
def test_run_config_is_the_benchmark_objective_set(tmp_path, objective_set, evaluator, names):
    bench = SimpleNamespace(
        dataset="cifar10", bench_objectives=bench_objectives(objective_set, "cifar10")
    )
    cfg = run_config(bench, "tnd", 3, 100, 8, tmp_path, mlflow=False)
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps(cfg))
    config = load_config(path, check_data=False)
    assert [o.name for o in config.objectives] == names
    assert [o.direction for o in config.objectives] == [o.direction for o in bench.bench_objectives]
    for key, value in evaluator.items():
        assert getattr(config.evaluator, key) == value
    assert (config.seed, config.search.algorithm) == (3, "tnd")
    assert (config.search.num_samples, config.search.max_concurrent) == (100, 8)
    assert not config.mlflow.enabled
