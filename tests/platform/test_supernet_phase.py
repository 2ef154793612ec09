"""The supernet_training phase on Ray: resumable training trial, hand-over, and a one-shot
search on the 3-node cluster where training and one-shot trials run on different nodes and
share the checkpoint through the experiment's storage."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pytest
import torch
from ray import tune

from paretune.objectives.supernet_train import SupernetTrainer, load_supernet
from paretune.platform.config import config_from_dict
from paretune.platform.launcher import run
from paretune.platform.prepare import prepare
from paretune.platform.supernet_phase import (
    HANDOVER_FILE,
    PHASE_NAME,
    make_phase,
    train_supernet_trial,
)


def oneshot_config(tmp_path: Path, mlflow_uri: str, **sections) -> dict:
    data = {
        "name": "oneshot",
        "seed": 0,
        "space": {"kind": "nb201", "restrict": {"e0_1": ["nor_conv_3x3", "skip_connect"]}},
        "evaluator": {
            "kind": "supernet",
            "channels": 4,
            "epochs": 2,
            "batch_size": 128,
            "bn_batches": 2,
            "latency_repeats": 2,
            "latency_warmup": 0,
            "energy_meter": "estimate",
        },
        "objectives": [
            {"name": "accuracy", "direction": "max"},
            {"name": "params", "direction": "min"},
        ],
        "search": {"algorithm": "random", "num_samples": 6, "max_concurrent": 3},
        "resources": {"cpu": 2},
        "storage": {"path": str(tmp_path / "runs")},
        "mlflow": {"tracking_uri": mlflow_uri},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data


@pytest.mark.slow
def test_training_trial_resumes_from_its_checkpoint(ray_cluster, tmp_path, mlflow_uri):
    config = config_from_dict(
        oneshot_config(tmp_path, mlflow_uri, resources={"cpu": 1}, mlflow={"enabled": False})
    )
    prepared = prepare(config)
    phase = make_phase(config)
    experiment_dir = tmp_path / "exp"
    storage = experiment_dir / "phases"
    # An interrupted training: the trial stopped after its first epoch, its checkpoint on storage.
    tuner = tune.Tuner(
        tune.with_parameters(
            train_supernet_trial, trainer_settings=phase.trainer_settings(prepared)
        ),
        run_config=tune.RunConfig(
            name=PHASE_NAME, storage_path=str(storage), stop={"training_iteration": 1}, verbose=0
        ),
    )
    first = tuner.fit()[0]
    assert first.metrics["epoch"] == 1 and first.metrics["supernet_done"] is False

    out, _ = phase.run(prepared, "searcher", experiment_dir, {}, verbose=0)
    record = json.loads((storage / PHASE_NAME / HANDOVER_FILE).read_text())
    checkpoint = record["checkpoint"]
    assert record["epochs"] == 2
    assert "continued" in checkpoint  # a new trial continued from the first one's checkpoint
    results = [
        json.loads(line)
        for p in glob.glob(str(storage / f"{PHASE_NAME}-continued-1" / "*" / "result.json"))
        for line in Path(p).read_text().splitlines()
    ]
    assert [r["epoch"] for r in results] == [2]
    assert results[0]["resumed_from_epoch"] == 1
    assert out.evaluator_settings["checkpoint"] == checkpoint
    assert out.evaluator_settings["space"]["restrict"]["e0_1"] == ["skip_connect", "nor_conv_3x3"]

    # The same weights as a training that was never interrupted.
    settings = {k: v for k, v in phase.trainer_settings(prepared).items() if k != "device"}
    straight = SupernetTrainer(**settings)
    straight.train()
    net, meta = load_supernet(checkpoint)
    assert meta["epoch"] == 2
    assert all(torch.equal(v, straight.net.state_dict()[k]) for k, v in net.state_dict().items())

    # Run again (a resume): the same hand-over at once, nothing trained.
    before = sorted(p.name for p in storage.iterdir())
    again, _ = phase.run(prepared, "searcher", experiment_dir, {}, verbose=0)
    assert again.evaluator_settings["checkpoint"] == checkpoint
    assert sorted(p.name for p in storage.iterdir()) == before


@pytest.mark.slow
def test_oneshot_search_on_three_nodes_shares_the_checkpoint(ray_cluster, tmp_path, mlflow_uri):
    from mlflow.tracking import MlflowClient

    # Training asks for both GPUs of a worker node (declared, not present: it runs on the CPU);
    # one-shot trials take 2 CPUs each, so three at once land on the three nodes.
    data = oneshot_config(tmp_path, mlflow_uri, evaluator={"train_gpu": 2, "train_cpu": 1})
    result = run(config_from_dict(data), verbose=0)
    rows = result.report.rows
    assert len(rows) == 6 and all(r.ok for r in rows)
    handover = json.loads(
        (result.experiment_dir / "phases" / PHASE_NAME / HANDOVER_FILE).read_text()
    )
    assert handover["node_id"] in ray_cluster.worker_node_ids  # the GPU node
    assert handover["resources"] == {"cpu": 1.0, "gpu": 2.0}
    trials = [
        json.loads(Path(p).read_text().splitlines()[-1])
        for p in glob.glob(str(result.experiment_dir / "*" / "result.json"))
    ]
    assert len(trials) == 6
    assert {t["supernet_checkpoint"] for t in trials} == {handover["checkpoint"]}
    assert {t["supernet_epoch"] for t in trials} == {2}
    nodes = {t["node_id"] for t in trials}
    assert nodes - {handover["node_id"]}, "no one-shot trial ran on another node"
    assert len(nodes) >= 2
    # MLflow: the training is a child run of the parent, beside the trials' runs.
    client = MlflowClient(mlflow_uri)
    (phase_run,) = client.search_runs(
        [result.mlflow_experiment_id], "tags.`paretune.role` = 'phase'"
    )
    assert phase_run.data.tags["mlflow.parentRunId"] == result.parent_run_id
    assert phase_run.info.status == "FINISHED"
    history = client.get_metric_history(phase_run.info.run_id, "supernet_train_loss")
    assert [m.step for m in history] == [1, 2]
