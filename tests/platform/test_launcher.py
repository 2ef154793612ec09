"""End to end through real Ray Tune and a real MLflow SQLite store."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from paretune.platform.config import config_from_dict
from paretune.platform.launcher import report, run


def tabular_config(nb201_path, mlflow_uri, tmp_path, **search) -> dict:
    return {
        "name": "tabular-test",
        "seed": 0,
        "evaluator": {"kind": "table", "path": str(nb201_path)},
        "objectives": [
            {"name": "accuracy", "direction": "max"},
            {"name": "latency", "direction": "min"},
            {"name": "energy", "direction": "min"},
        ],
        "search": {"algorithm": "regularized_evolution", "num_samples": 24, **search},
        "resources": {"cpu": 0.5},
        "storage": {"path": str(tmp_path / "runs")},
        "mlflow": {"tracking_uri": mlflow_uri},
    }


def nested_runs(client: MlflowClient, exp_id: str, parent_id: str) -> list:
    return client.search_runs(
        [exp_id], f"tags.mlflow.parentRunId = '{parent_id}'", max_results=1000
    )


# The parent run's searcher/ artifacts of each engine: (file, a column the CSV must have).
INSPECTION_FILES = {
    "tnd": [("stage_probabilities.csv", "stage_0"), ("shrink_history.csv", "dropped")],
    "pertnas": [("motif_table.csv", "effect_accuracy")],
    "nsga2": [],
}
# Proposal metadata each engine's nested runs carry as meta.* tags.
META_TAGS = {
    "tnd": {"meta.stage", "meta.probability"},
    "pertnas": {"meta.phase", "meta.generation"},
    "nsga2": set(),
}


@pytest.mark.parametrize("algorithm", ["tnd", "pertnas", "nsga2"])
def test_tabular_search_is_tracked_in_mlflow(
    ray_session, nb201_path, mlflow_uri, tmp_path, algorithm
):
    cfg = config_from_dict(tabular_config(nb201_path, mlflow_uri, tmp_path, algorithm=algorithm))
    result = run(cfg, verbose=0)

    rep = result.report
    assert len(rep.rows) == 24
    assert all(r.ok for r in rep.rows)
    assert 1 <= len(rep.front) <= 24
    assert rep.hv_history == sorted(rep.hv_history)  # hypervolume never decreases
    assert rep.hypervolume > 0
    assert all("test_accuracy" in r.extras for r in rep.rows)
    for name in ("trials.csv", "pareto_front.csv", "pareto_front.png", "hypervolume.png"):
        assert (result.experiment_dir / "report" / name).stat().st_size > 0

    client = MlflowClient(mlflow_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["num_trials"] == 24
    assert parent.data.params["search.algorithm"] == algorithm
    assert len(client.get_metric_history(result.parent_run_id, "hypervolume")) == 24
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id, "report")}
    assert "report/pareto_front.csv" in artifacts

    children = nested_runs(client, result.mlflow_experiment_id, result.parent_run_id)
    assert len(children) == 24
    assert {c.info.status for c in children} == {"FINISHED"}
    for c in children:
        assert c.data.tags["arch"].startswith("|")
        assert c.data.tags["source/accuracy"] == "table"
        assert {"accuracy", "latency", "energy", "test_accuracy"} <= set(c.data.metrics)
        assert set(c.data.params) == {"e0_1", "e0_2", "e1_2", "e0_3", "e1_3", "e2_3"}
    # Tagged as each trial ended and corrected at the end: exactly the report's front.
    front_ids = {r.trial_id for r in rep.front}
    tag_of = {c.data.tags["trial_id"]: c.data.tags.get("pareto") for c in children}
    assert {t for t, tag in tag_of.items() if tag == "front"} == front_ids
    assert {t for t, tag in tag_of.items() if tag == "dominated"} == set(tag_of) - front_ids
    for c in children:  # a table search draws the cells of the front only
        pictures = {a.path for a in client.list_artifacts(c.info.run_id)}
        assert ("cell.png" in pictures) is (c.data.tags["trial_id"] in front_ids)
    for c in children:
        assert META_TAGS[algorithm] <= set(c.data.tags)
    if algorithm == "pertnas":  # children of a perturbation name their parent trial's run
        trial_ids = {c.data.tags["trial_id"] for c in children}
        with_parent = [c for c in children if "meta.parent" in c.data.tags]
        assert with_parent
        for c in with_parent:  # a perturbation: parent trial, edited decision, old/new option
            assert c.data.tags["meta.parent_trial"] in trial_ids
            assert {"meta.decision", "meta.old_option", "meta.new_option"} <= set(c.data.tags)

    # The engine's inspection tables: on disk and on the parent run, CSV and heat map.
    logged = {a.path for a in client.list_artifacts(result.parent_run_id, "searcher")}
    for name, column in INSPECTION_FILES[algorithm]:
        frame = pd.read_csv(result.experiment_dir / "searcher" / name)
        assert column in frame.columns and len(frame) > 0
        assert f"searcher/{name}" in logged
    heatmaps = [n for n, _ in INSPECTION_FILES[algorithm] if n != "shrink_history.csv"]
    for name in heatmaps:
        assert f"searcher/{name[:-4]}.png" in logged

    # The report rebuilt from the directory agrees with the one at the end of the run.
    again = report(result.experiment_dir)
    assert {r.trial_id for r in again.front} == {r.trial_id for r in rep.front}
    assert again.hypervolume == pytest.approx(rep.hypervolume)


def test_training_search_reports_every_epoch(ray_session, mlflow_uri, tmp_path):
    cfg = config_from_dict(
        {
            "name": "train-test",
            "evaluator": {
                "kind": "train",
                "dataset": "digits",
                "epochs": 2,
                "channels": 4,
                "cells_per_stage": 1,
            },
            "objectives": [
                {"name": "accuracy", "direction": "max"},
                {"name": "params", "direction": "min"},
                {"name": "latency", "direction": "min"},
                {"name": "energy", "direction": "min"},
            ],
            "search": {"algorithm": "random", "num_samples": 3},
            "storage": {"path": str(tmp_path / "runs")},
            "mlflow": {"tracking_uri": mlflow_uri},
        }
    )
    result = run(cfg, verbose=0)
    assert len(result.report.rows) == 3
    assert all(r.ok for r in result.report.rows)
    client = MlflowClient(mlflow_uri)
    children = nested_runs(client, result.mlflow_experiment_id, result.parent_run_id)
    assert len(children) == 3
    for c in children:
        history = client.get_metric_history(c.info.run_id, "accuracy")
        assert [m.step for m in history][:2] == [1, 2]
        assert c.data.tags["source/energy"] == "estimated"
        assert c.data.tags["source/latency"] == "measured"
        assert c.data.metrics["energy"] > 0


def test_cli_reports_a_bad_config_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nobjectives:\n  - {name: accuracy, direction: upward}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "paretune", "run", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "objectives[0].direction = 'upward'" in proc.stderr
    assert "Traceback" not in proc.stderr
