"""The phases' shared trial set-up: a Tune run retried from its checkpoint and restored when it
exists, atomic records, and the MLflow child run of a phase (real Ray, real MLflow)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from paretune.platform.config_loading import load_config
from paretune.platform.phase_trials import (
    METRICS_PER_BATCH,
    PARAMS_PER_BATCH,
    final_searcher,
    fit_trials,
    log_batches,
    parent_run_id,
    report_checkpoint,
    restore_from_tune,
    start_phase_run,
    trial_settings,
    write_record,
)
from tests.platform.cli import ROOT


class Counter:
    """A trial's state: a count saved to and loaded from a folder."""

    def __init__(self) -> None:
        self.n = 0

    def save(self, folder: Any) -> None:
        (Path(folder) / "n.txt").write_text(str(self.n))

    def load(self, folder: Any) -> None:
        self.n = int((Path(folder) / "n.txt").read_text())


def count_trial(config: dict[str, Any], *, marker: str, until: int) -> None:
    """Counts to ``until``, a report and checkpoint per step; fails once after step 1."""
    state = Counter()
    restored = restore_from_tune(state)
    device = trial_settings({"device": "gpu-if-given"})["device"]
    while state.n < until:
        state.n += 1
        report_checkpoint({"n": state.n, "restored": restored, "device": device}, state)
        if state.n == 1 and not Path(marker).exists():
            Path(marker).write_text("failed once")
            raise RuntimeError("fails once after its first checkpoint")


def test_a_trial_is_retried_from_its_checkpoint_and_a_finished_run_restored(
    ray_session, tmp_path: Path
) -> None:
    marker = tmp_path / "failed"
    kwargs: dict[str, Any] = {
        "storage": tmp_path / "phase",
        "name": "count",
        "resources": {"cpu": 1},
        "max_failures": 1,
        "verbose": 0,
        "parameters": {"marker": str(marker), "until": 3},
        "keep": 1,
    }
    (result,) = fit_trials(count_trial, **kwargs)
    assert marker.is_file() and result.error is None
    assert result.metrics["n"] == 3 and result.metrics["restored"] is True
    assert result.metrics["device"] == "cpu"  # no GPU asked for
    steps = [json.loads(line)["n"] for line in (Path(result.path) / "result.json").open()]
    assert steps == [1, 2, 3]  # the retry went on from step 1's checkpoint
    assert len(list(Path(result.path).glob("checkpoint_*"))) == 1  # keep=1
    last = Counter()
    last.load(result.checkpoint.path)
    assert last.n == 3

    # Run again (a resume): the finished run is restored, nothing runs again.
    (again,) = fit_trials(count_trial, **kwargs)
    assert again.metrics["n"] == 3 and again.path == result.path
    steps = [json.loads(line)["n"] for line in (Path(result.path) / "result.json").open()]
    assert steps == [1, 2, 3]


def test_trial_settings_copy_and_leave_other_devices() -> None:
    given = {"device": "cuda:1", "epochs": 2}
    out = trial_settings(given)
    assert out == given and out is not given


def test_write_record_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "phases" / "x" / "record.json"
    write_record(path, {"a": 1})
    write_record(path, {"a": 2}, indent=2)
    assert json.loads(path.read_text()) == {"a": 2}
    assert path.read_text().startswith('{\n  "a"')
    assert [p.name for p in path.parent.iterdir()] == ["record.json"]  # no temporary left


def test_final_searcher_hands_out_the_finals_up_to_num_samples() -> None:
    from paretune.platform.config import config_from_dict
    from paretune.platform.prepare import prepare

    config = config_from_dict(
        {
            "name": "t",
            "search": {"algorithm": "tnd", "mode": "supernet", "num_samples": 2},
            "evaluator": {"kind": "train"},
            "objectives": [{"name": "params", "direction": "min"}],
        }
    )
    prepared = prepare(config)
    assert final_searcher(prepared, config).engine.archs == []  # the placeholder
    searcher = final_searcher(prepared, config, [[1] * 6, [3] * 6, [2] * 6], [{"i": 0}] * 3)
    first = searcher.suggest("a")
    assert first["arch"].count("skip_connect") == 6 and searcher.engine.meta[0] == {"i": 0}
    assert searcher.suggest("b")["arch"].count("nor_conv_3x3") == 6
    assert searcher.suggest("c") == searcher.FINISHED  # search.num_samples = 2


@pytest.mark.parametrize("enabled", [True, False])
def test_parent_run_id_needs_mlflow_and_a_parent(enabled: bool) -> None:
    config = load_config(ROOT / "conf" / "quickstart.yaml", [f"mlflow.enabled={enabled}"])
    assert parent_run_id(config, {"parent_run_id": "abc"}) == ("abc" if enabled else None)
    assert parent_run_id(config, {"parent_run_id": ""}) is None
    assert parent_run_id(config, {}) is None


def test_a_phase_run_is_a_child_of_the_parent_run(mlflow_uri: str) -> None:
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri)
    exp = client.create_experiment("phases")
    parent = client.create_run(exp).info.run_id
    state = {"mlflow_experiment_id": exp, "parent_run_id": parent}
    run_id = start_phase_run(client, state, "stage0", "tnd_supernet", job_kind="train")
    n_metrics, n_params = METRICS_PER_BATCH + 5, PARAMS_PER_BATCH + 3
    log_batches(
        client,
        run_id,
        metrics=[Metric("loss", float(i), 0, i) for i in range(n_metrics)],
        params=[Param(f"p{i}", str(i)) for i in range(n_params)],
    )
    client.set_terminated(run_id)
    run = client.get_run(run_id)
    tags = run.data.tags
    assert tags["mlflow.parentRunId"] == parent and tags["paretune.role"] == "phase"
    assert tags["phase"] == "tnd_supernet" and tags["job_kind"] == "train"
    assert run.info.run_name == "stage0" and run.info.status == "FINISHED"
    history = client.get_metric_history(run_id, "loss")
    assert sorted(m.step for m in history) == list(range(n_metrics))
    assert len(run.data.params) == n_params
