"""Latency-limited search through the platform: limits as constraints, predictor screening."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from paretune.objectives.predictor import LatencyPredictor, table_pairs
from paretune.objectives.table import TableEvaluator
from paretune.platform.config import config_from_dict
from paretune.platform.launcher import run

SMALL = {"hidden": 32, "layers": 3, "epochs": 40, "ensemble": 1, "batch_size": 32}


@pytest.fixture(scope="module")
def predictor_folder(nb201_path, tmp_path_factory):
    """A small latency predictor for the Pixel 3, trained on 150 table architectures."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    pairs = table_pairs(nb201_path, devices=["pixel3"])
    order = np.random.default_rng(0).permutation(len(pairs))
    train = pairs.subset(order[:150])
    predictor = LatencyPredictor(SMALL).fit(train.archs, train.latencies, source="table")
    torch.set_num_threads(before)
    return predictor.save(tmp_path_factory.mktemp("predictor") / "pixel3")


@pytest.mark.slow
def test_latency_limit_is_respected_and_screening_saves_trials(
    ray_session, nb201_path, predictor_folder, mlflow_uri, tmp_path
):
    table = TableEvaluator(nb201_path, latency_device="pixel3")
    latencies, _ = table.matrix(["latency"])
    limit = float(np.quantile(latencies[:, 0], 0.25))

    def search(screening: bool):
        return run(
            config_from_dict(
                {
                    "name": f"limit-{'screened' if screening else 'plain'}",
                    "evaluator": {
                        "kind": "table",
                        "path": str(nb201_path),
                        "latency_device": "pixel3",
                    },
                    "objectives": [
                        {"name": "accuracy", "direction": "max"},
                        {"name": "latency", "direction": "min", "limit": limit},
                    ],
                    "search": {"algorithm": "random", "num_samples": 20},
                    "resources": {"cpu": 0.5},
                    "predictor": {"path": str(predictor_folder), "device": "pixel3"},
                    "screening": {"enabled": screening, "margin": 0.0},
                    "storage": {"path": str(tmp_path / "runs")},
                    "mlflow": {"tracking_uri": mlflow_uri},
                }
            ),
            verbose=0,
        )

    plain, screened = search(False), search(True)
    infeasible = {}
    for name, result in (("plain", plain), ("screened", screened)):
        rows = result.report.rows
        assert len(rows) == 20 and all(r.ok for r in rows)
        infeasible[name] = sum(r.values["latency"] > limit for r in rows)
        assert infeasible[name] < 20  # seeded: some trial is feasible, and then
        assert all(
            r.values["latency"] <= limit for r in result.report.front
        )  # holds only feasible ones
        # every trial also carries the predictor's estimate, tagged as predicted
        assert {r.extras.get("source/predicted_latency") for r in rows} == {"predicted"}
    assert infeasible["screened"] < infeasible["plain"], infeasible
