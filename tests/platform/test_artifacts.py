"""What MLflow holds of a search: parent summary, trial pictures, pareto tags, front models.

One real training search (the session's Ray cluster, digits, 4 trials of 2 epochs) runs once
for the module; the functions of ``paretune.platform.artifacts`` are then called on it as the
launcher calls them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
import torch
from matplotlib.image import imread
from matplotlib.patches import FancyArrowPatch
from mlflow.tracking import MlflowClient

from paretune.objectives.base import ObjectiveSet
from paretune.objectives.data import load_dataset
from paretune.platform import artifacts
from paretune.platform.artifacts import (
    cell_edges,
    cell_figure,
    cell_png,
    log_cell_pictures,
    log_front_models,
    log_parent_summary,
    searcher_state_from_dir,
    tag_pareto,
)
from paretune.platform.config import config_from_dict
from paretune.platform.launcher import run
from paretune.platform.report import TrialRow, build_report
from paretune.spaces import NB201Space

ARCH = "|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|none~2|"
BUILD = {"channels": 4, "cells_per_stage": 1, "input_size": 8, "in_channels": 1, "num_classes": 10}


def trial_runs_of(client: MlflowClient, exp_id: str, parent_id: str) -> dict[str, str]:
    runs = client.search_runs(
        [exp_id], f"tags.mlflow.parentRunId = '{parent_id}'", max_results=1000
    )
    return {r.data.tags["trial_id"]: r.info.run_id for r in runs}


def run_ids_with(client: MlflowClient, exp_id: str, filter_string: str) -> set[str]:
    return {r.info.run_id for r in client.search_runs([exp_id], filter_string, max_results=1000)}


@pytest.fixture(scope="module")
def search(ray_cluster, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("artifacts")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    # Artifacts next to the store, not in the current directory.
    client.create_experiment("artifacts-test", artifact_location=str(tmp / "mlartifacts"))
    cfg = config_from_dict(
        {
            "name": "artifacts-test",
            "evaluator": {
                "kind": "train",
                "dataset": "digits",
                "epochs": 2,
                "channels": 4,
                "batch_size": 128,
            },
            "objectives": [
                {"name": "accuracy", "direction": "max"},
                {"name": "params", "direction": "min", "limit": 1.0},
                {"name": "latency", "direction": "min"},
            ],
            "search": {
                "algorithm": "regularized_evolution",
                "num_samples": 4,
                "max_concurrent": 2,
                "params": {"population_size": 2, "sample_size": 2},
            },
            "storage": {"path": str(tmp / "runs")},
            "mlflow": {"tracking_uri": uri},
        }
    )
    result = run(cfg, verbose=0)
    exp_id = result.mlflow_experiment_id
    return SimpleNamespace(
        tmp=tmp,
        uri=uri,
        client=client,
        config=cfg,
        result=result,
        report=result.report,
        exp_id=exp_id,
        trial_runs=trial_runs_of(client, exp_id, result.parent_run_id),
    )


# ---------------------------------------------------------------------- cell picture
def test_cell_figure_draws_every_edge_with_its_operation():
    edges = cell_edges(ARCH)
    assert edges == [
        (0, 1, "nor_conv_3x3"),
        (0, 2, "none"),
        (1, 2, "avg_pool_3x3"),
        (0, 3, "skip_connect"),
        (1, 3, "nor_conv_1x1"),
        (2, 3, "none"),
    ]
    fig = cell_figure(ARCH)
    ax = fig.axes[0]
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert len(arrows) == 6
    dashed = [a for a in arrows if a.get_linestyle() not in ("-", "solid")]
    assert len(dashed) == 2  # the two `none` edges
    labels = [t.get_text() for t in ax.texts]
    for op in ("nor_conv_3x3", "avg_pool_3x3", "skip_connect", "nor_conv_1x1"):
        assert labels.count(op) == 1
    assert labels.count("none") == 2
    assert {"0", "1", "2", "3"} <= set(labels)
    png = cell_png(ARCH)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="unknown operation"):
        cell_figure(ARCH.replace("avg_pool_3x3", "max_pool_3x3"))


def test_parallel_coordinates_only_for_three_or_more_objectives(tmp_path):
    rng = np.random.default_rng(0)
    rows = [
        TrialRow(f"t{i}", i, ARCH, {"a": float(x), "b": float(y), "c": float(z)}, ok=True)
        for i, (x, y, z) in enumerate(rng.random((12, 3)), start=1)
    ]
    three = build_report(rows, ObjectiveSet.of(("a", "max"), ("b", "min"), ("c", "min")))
    paths = three.write(tmp_path / "three")
    image = imread(paths["parallel_plot"])
    assert image.shape[0] > 200 and image.shape[1] > 400
    two = build_report(rows, ObjectiveSet.of(("a", "max"), ("b", "min")))
    paths = two.write(tmp_path / "two")
    assert "parallel_plot" not in paths
    assert not (tmp_path / "two" / "parallel_coordinates.png").exists()
    assert imread(paths["front_plot"]).shape[1] > 300


# ---------------------------------------------------------------------- trial runs
def test_trial_runs_show_epochs_sources_metadata_and_cell(search):
    client, rep = search.client, search.report
    assert len(search.trial_runs) == 4 and all(r.ok for r in rep.rows)
    archs = {search.trial_runs[r.trial_id]: r.arch for r in rep.rows}
    assert log_cell_pictures(client, archs) == 4
    parents = 0
    for run_id, arch in archs.items():
        run = client.get_run(run_id)
        tags = run.data.tags
        assert tags["arch"] == arch
        assert tags["source/accuracy"] == "measured"
        assert tags["source/params"] == "measured"
        assert tags["meta.phase"] in ("random", "mutation")
        parents += "meta.parent" in tags
        # One point per epoch (the final report adds one more step with the final values).
        steps = [m.step for m in client.get_metric_history(run_id, "accuracy")]
        assert steps[:2] == [1, 2]
        epochs = client.get_metric_history(run_id, "epoch")
        assert [(m.step, m.value) for m in epochs] == [(1, 1.0), (2, 2.0)]
        names = [a.path for a in client.list_artifacts(run_id)]
        assert names.count(artifacts.CELL_ARTIFACT) == 1
        local = client.download_artifacts(run_id, artifacts.CELL_ARTIFACT, str(search.tmp))
        assert Path(local).read_bytes() == cell_png(arch)
    assert parents >= 1  # regularized evolution mutated at least one parent


def test_tag_pareto_lists_the_front_and_writes_only_changes(search):
    client, exp_id, runs = search.client, search.exp_id, search.trial_runs
    ids = sorted(runs)
    counts = tag_pareto(client, runs, {ids[0]}, failed_ids={ids[1]})
    assert {k: counts[k] for k in ("front", "dominated", "failed")} == {
        "front": 1,
        "dominated": 2,
        "failed": 1,
    }
    assert run_ids_with(client, exp_id, "tags.pareto = 'front'") == {runs[ids[0]]}
    assert run_ids_with(client, exp_id, "tags.pareto = 'failed'") == {runs[ids[1]]}

    front = {r.trial_id for r in search.report.front}
    counts = tag_pareto(client, runs, front)
    assert counts["front"] == len(front) and counts["written"] >= 1
    assert run_ids_with(client, exp_id, "tags.pareto = 'front'") == {runs[t] for t in front}
    assert run_ids_with(client, exp_id, "tags.pareto = 'dominated'") == {
        runs[t] for t in runs if t not in front
    }
    assert tag_pareto(client, runs, front)["written"] == 0


# ---------------------------------------------------------------------- parent run
def test_parent_summary_holds_objectives_searcher_metrics_plots_and_state(search):
    client, rep, cfg = search.client, search.report, search.config
    run_id = client.create_run(search.exp_id, run_name="summary-check").info.run_id
    state = searcher_state_from_dir(search.result.experiment_dir)  # what Ray saved at the end
    assert state["format"] == "paretune-searcher/1"
    assert state["engine"]["engine"] == "regularized_evolution"
    paths = rep.write(search.tmp / "report")
    log_parent_summary(client, run_id, rep, cfg, paths=paths, searcher_state=state)

    data = client.get_run(run_id).data
    assert data.metrics["num_trials"] == 4
    assert data.metrics["failed_trials"] == rep.num_failed
    assert data.metrics["front_size"] == len(rep.front)
    assert data.metrics["feasible_trials"] == 4
    assert data.metrics["best_accuracy"] == max(r.values["accuracy"] for r in rep.rows)
    assert data.metrics["best_params"] == min(r.values["params"] for r in rep.rows)
    history = client.get_metric_history(run_id, "hypervolume")
    assert [(m.step, m.value) for m in history] == list(enumerate(rep.hv_history, start=1))

    tags = data.tags
    assert (tags["objective.accuracy"], tags["objective.params"]) == ("max", "min")
    assert float(tags["objective.params.limit"]) == 1.0
    assert "objective.accuracy.limit" not in tags
    assert tags["search.algorithm"] == "regularized_evolution"
    assert json.loads(tags["search.params"]) == {"population_size": 2, "sample_size": 2}
    assert tags["search.num_samples"] == "4"
    note = tags["mlflow.note.content"]
    assert rep.summary() in note
    assert "| params | min | 1 |" in note

    listed = {a.path for a in client.list_artifacts(run_id, "report")}
    assert listed == {
        "report/trials.csv",
        "report/pareto_front.csv",
        "report/pareto_front.png",
        "report/hypervolume.png",
        "report/parallel_coordinates.png",
    }
    csv_path = client.download_artifacts(run_id, "report/pareto_front.csv", str(search.tmp))
    lines = Path(csv_path).read_text().splitlines()[1:]
    assert {line.split(",")[0] for line in lines} == {r.trial_id for r in rep.front}
    state_path = client.download_artifacts(run_id, "searcher/state.json", str(search.tmp))
    assert json.loads(Path(state_path).read_text()) == json.loads(json.dumps(state))


# ---------------------------------------------------------------------- front models
def train_and_save(arch: str, folder: Path, steps: int = 6) -> torch.nn.Module:
    """A real NB201 network trained for a few SGD steps on digits, saved as a trial would."""
    data = load_dataset("digits")
    space = NB201Space()
    torch.manual_seed(1)
    model = space.build(space.decode(arch), **BUILD)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    for i in range(steps):
        x, y = data.train.x[i * 64 : (i + 1) * 64], data.train.y[i * 64 : (i + 1) * 64]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / artifacts.WEIGHTS_FILE)
    meta = {"arch": arch, "space": "nb201", "build": BUILD, "dataset": "digits"}
    (folder / artifacts.WEIGHTS_META_FILE).write_text(json.dumps(meta))
    return model


def test_front_models_are_logged_registered_and_loadable(search):
    client, rep = search.client, search.report
    front = rep.front[:2]
    without = next(r for r in rep.rows if r not in front)  # saved no weights: skipped
    dirs = {r.trial_id: search.tmp / "weights" / r.trial_id for r in [*front, without]}
    trained = {r.trial_id: train_and_save(r.arch, dirs[r.trial_id]) for r in front}
    uri_before = mlflow.get_tracking_uri()

    logged = log_front_models(
        search.uri,
        [*front, without],
        search.trial_runs,
        dirs,
        register_name="paretune-test-front",
    )

    assert mlflow.get_tracking_uri() == uri_before  # the global tracking URI is restored
    assert [m.trial_id for m in logged] == [r.trial_id for r in front]
    assert [m.registered_version for m in logged] == [str(i) for i in range(1, len(front) + 1)]
    x = load_dataset("digits").test.x[:5]
    with artifacts._tracking_uri(search.uri):
        for m in logged:
            assert m.run_id == search.trial_runs[m.trial_id]
            tags = client.get_run(m.run_id).data.tags
            assert tags["model_uri"] == m.model_uri
            assert tags["registered_model"] == f"paretune-test-front/{m.registered_version}"
            loaded = mlflow.pytorch.load_model(m.model_uri)
            with torch.no_grad():
                want = trained[m.trial_id](x)
                assert torch.allclose(loaded(x), want, atol=1e-5)
                arch = next(r.arch for r in front if r.trial_id == m.trial_id)
                untrained = NB201Space().build(NB201Space().decode(arch), **BUILD).eval()
                assert not torch.allclose(untrained(x), want, atol=1e-3)
            registered = mlflow.pytorch.load_model(
                f"models:/paretune-test-front/{m.registered_version}"
            )
            with torch.no_grad():
                assert torch.allclose(registered(x), want, atol=1e-5)
            info = mlflow.models.get_model_info(m.model_uri)
            assert info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 1, 8, 8)
            assert info.signature.outputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 10)
            assert info.saved_input_example_info is not None
            served = mlflow.pyfunc.load_model(m.model_uri).predict(x[:3].numpy())
            assert np.asarray(served).shape == (3, 10)
            assert np.all(np.isfinite(served)) and not math.isnan(float(np.sum(served)))


def test_inspection_tables_are_written_as_csv_and_heat_maps(tmp_path):
    import pandas as pd

    from paretune.search_algos.base import InspectionTable

    rows = [
        {"decision": "e0_1", "option": "none", "effect_accuracy": 0.4, "score": -0.4},
        {"decision": "e0_1", "option": "conv", "effect_accuracy": -0.4, "score": 0.4},
        {"decision": "e0_2", "option": "none", "effect_accuracy": math.nan, "score": math.nan},
    ]
    tables = [
        InspectionTable("motifs", rows, heatmap=(("decision", "option"), ("effect_accuracy",))),
        InspectionTable("history", [], columns=("stage", "dropped")),
    ]
    files = artifacts.write_inspection_tables(tables, tmp_path / "searcher")
    assert sorted(f.name for f in files) == ["history.csv", "motifs.csv", "motifs.png"]
    back = pd.read_csv(tmp_path / "searcher" / "motifs.csv")
    assert back["effect_accuracy"].iloc[:2].tolist() == [0.4, -0.4]
    assert math.isnan(back["effect_accuracy"].iloc[2])
    assert list(pd.read_csv(tmp_path / "searcher" / "history.csv").columns) == ["stage", "dropped"]
    image = imread(tmp_path / "searcher" / "motifs.png")
    assert image.shape[0] > 100 and image.shape[1] > 100
    # One row label per (decision, option), in order; NaN shown as "-".
    fig = artifacts.inspection_heatmap(tables[0])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["e0_1:none", "e0_1:conv", "e0_2:none"]
    assert "-" in [t.get_text() for t in ax.texts]
