"""End to end through real Ray Tune and a real MLflow SQLite store."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from ray import cloudpickle
from ray._common.utils import binary_to_hex
from ray.tune.utils.serialization import TuneFunctionDecoder

from paretune.platform.cluster import check_tracking_uri
from paretune.platform.config import ConfigError, config_from_dict
from paretune.platform.experiment import CONFIG_FILE, write_state
from paretune.platform.journal import JOURNAL_FILE, JournalCallback, TrialJournal
from paretune.platform.launcher import report, resume, run
from paretune.platform.parent_run import open_parent_run, redacted_params, redacted_yaml
from paretune.platform.redact import redact_uri
from paretune.platform.sync import sync_mlflow


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


@pytest.mark.parametrize(
    "algorithm",
    [
        pytest.param("tnd", marks=pytest.mark.slow),
        pytest.param("pertnas", marks=pytest.mark.slow),
        "nsga2",
    ],
)
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


# ---------------------------------------------------------------------- trust and records
class _TouchOnUnpickle:
    """Unpickling this creates ``path``: what a crafted experiment state could run."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _handed_over_folder(tmp_path, nb201_path, mlflow_uri, marker: Path) -> Path:
    """An experiment folder as someone could hand it over: paretune's own files (a journal of
    two finished trials) and a Ray experiment state that says they are RUNNING and carries a
    pickled payload (Ray's cloudpickle fallback)."""
    data = tabular_config(nb201_path, mlflow_uri, tmp_path, num_samples=2)
    folder = tmp_path / "handed-over"
    folder.mkdir()
    (folder / CONFIG_FILE).write_text(config_from_dict(data).to_yaml())
    write_state(folder, {"run_name": "handed-over", "storage": str(tmp_path)})
    journal = TrialJournal(folder / JOURNAL_FILE)
    for n, arch in enumerate(ARCHS, start=1):
        result = {"accuracy": 90.0 + n, "latency": 5.0 - n, "energy": 1.0, "trial_id": f"t_{n}"}
        journal.append(f"t_{n}", "ok", result, None, {"arch": arch}, number=n)
    payload = {
        "_type": "CLOUDPICKLE_FALLBACK",
        "value": binary_to_hex(cloudpickle.dumps(_TouchOnUnpickle(str(marker)))),
    }
    trial = json.dumps({"status": "RUNNING", "trial_id": "t_1", "config": payload})
    state = {"trial_data": [[trial, trial]], "runner_data": {"payload": payload}}
    (folder / "experiment_state-2026-12-04_00-00-00.json").write_text(json.dumps(state))
    (folder / "searcher-state-2026-12-04_00-00-00.pkl").write_bytes(
        cloudpickle.dumps(_TouchOnUnpickle(str(marker)))
    )
    return folder


ARCHS = [
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    "|none~0|+|skip_connect~0|none~1|+|none~0|none~1|nor_conv_1x1~2|",
]


def test_report_and_sync_read_only_paretunes_own_files(nb201_path, mlflow_uri, tmp_path):
    marker = tmp_path / "payload-ran"
    folder = _handed_over_folder(tmp_path, nb201_path, mlflow_uri, marker)

    rep = report(folder)  # the journal is the record: both trials finished, with their values
    assert [(r.trial_id, r.ok, r.values["accuracy"]) for r in rep.rows] == [
        ("t_1", True, 91.0),
        ("t_2", True, 92.0),
    ]
    summary = sync_mlflow(folder)
    assert summary.created == 2
    assert not marker.exists()  # nothing of Ray's state was unpickled

    # The crafted state does run its payload where Ray's restore reads it (Ray decodes its own
    # state with cloudpickle allowed): the test is real.
    trial_json = json.loads((folder / "experiment_state-2026-12-04_00-00-00.json").read_text())
    TuneFunctionDecoder(allow_cloudpickle=True).decode(trial_json["trial_data"][0][0])
    assert marker.exists()


def test_resume_before_rays_first_snapshot_ends_the_parent_run(nb201_path, mlflow_uri, tmp_path):
    folder = _handed_over_folder(tmp_path, nb201_path, mlflow_uri, tmp_path / "unused")
    for path in folder.glob("*state-*"):
        path.unlink()  # the driver died before Ray saved anything
    config = config_from_dict(tabular_config(nb201_path, mlflow_uri, tmp_path))
    exp_id, parent_id = open_parent_run(config, "handed-over", folder)
    write_state(
        folder,
        {
            "run_name": "handed-over",
            "storage": str(tmp_path),
            "mlflow_experiment_id": exp_id,
            "parent_run_id": parent_id,
        },
    )
    with pytest.raises(ConfigError, match="before Ray saved any state.*paretune run"):
        resume(folder, verbose=0)
    assert MlflowClient(mlflow_uri).get_run(parent_id).info.status == "KILLED"


@pytest.mark.slow  # a 4-trial run and a resume: ~10 s
def test_a_damaged_searcher_state_stops_resume_with_one_line(
    ray_session, nb201_path, mlflow_uri, tmp_path
):
    result = run(
        config_from_dict(tabular_config(nb201_path, mlflow_uri, tmp_path, num_samples=4)), verbose=0
    )
    (state_file,) = result.experiment_dir.glob("searcher-state-*.pkl")
    state_file.write_text('{"format": "paretune-searcher/1", "engine": ')  # torn
    with pytest.raises(ConfigError) as caught:
        resume(result.experiment_dir, verbose=0)
    message = str(caught.value)
    assert str(state_file) in message and "delete that file" in message
    assert "\n" not in message


def test_a_replayed_trial_gets_no_second_journal_line(tmp_path):
    class Trial:
        def __init__(self, trial_id):
            self.trial_id, self.config = trial_id, {"arch": ARCHS[0]}
            self.experiment_tag = f"{int(trial_id[-1]) + 1}_arch=..."
            self.last_result = {"accuracy": 1.0}

    path = tmp_path / JOURNAL_FILE
    JournalCallback(path).on_trial_complete(0, [], Trial("a_00000"))
    # The callback Ray restores with the tuner (pickled), in a new driver: replays "a".
    restored = pickle.loads(pickle.dumps(JournalCallback(path, first_number=0)))
    restored.on_trial_complete(0, [], Trial("a_00000"))
    restored.on_trial_complete(0, [], Trial("a_00001"))
    lines = path.read_text().splitlines()
    assert [json.loads(line)["trial_id"] for line in lines] == ["a_00000", "a_00001"]
    assert [json.loads(line)["number"] for line in lines] == [1, 2]


def test_an_unreadable_journal_line_is_reported(tmp_path, caplog):
    path = tmp_path / JOURNAL_FILE
    journal = TrialJournal(path)
    journal.append("a", "ok", {"accuracy": 1.0}, None, {})
    with open(path, "a") as f:
        f.write('{"trial_id": "b", "stat\n')
    journal.append("c", "ok", {"accuracy": 2.0}, None, {})
    assert set(journal.load()) == {"a", "c"}
    assert f"{path} line 2: cannot be read" in caplog.text


def test_credentials_of_the_tracking_uri_are_redacted(nb201_path, tmp_path):
    uri = "postgresql://alice:s3cret@db.example:5432/mlflow"
    assert redact_uri(uri) == "postgresql://alice:***@db.example:5432/mlflow"
    assert redact_uri("sqlite:///x.db") == "sqlite:///x.db"
    data = tabular_config(nb201_path, uri, tmp_path)
    config = config_from_dict(data)
    assert "s3cret" not in json.dumps(redacted_params(config))
    assert "s3cret" not in redacted_yaml(config)
    assert config.mlflow.tracking_uri == uri  # the experiment's own config keeps it
    server = config_from_dict({**data, "mlflow": {"tracking_uri": "http://bob:pw@127.0.0.1:9"}})
    with pytest.raises(ConfigError) as caught:
        check_tracking_uri(server)
    assert "pw@" not in str(caught.value) and "bob:***@127.0.0.1:9" in str(caught.value)


class _RemoveStoreOnce:
    """An ``evaluator_wrapper`` whose trials remove the SQLite store once, mid-search."""

    def __init__(self, db: Path, after: int) -> None:
        self.db, self.after = str(db), after

    def __call__(self, evaluator):
        return _StoreRemover(evaluator, self.db, self.after)


class _StoreRemover:
    def __init__(self, inner, db: str, after: int) -> None:
        self.inner, self.db, self.after = inner, db, after

    def metrics(self):
        return self.inner.metrics()

    def evaluate(self, arch, report=None, **context):
        db = Path(self.db)
        marker = db.parent / "trials-seen"
        with marker.open("a") as f:
            f.write("x")
        if len(marker.read_text()) == self.after:
            for p in db.parent.glob(db.name + "*"):
                p.unlink()
        return self.inner.evaluate(arch, report, **context)


def test_a_store_removed_during_the_search_is_reported(ray_session, nb201_path, tmp_path):
    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    cfg = config_from_dict(
        tabular_config(nb201_path, f"sqlite:///{db}", tmp_path, num_samples=12, max_concurrent=2)
    )
    result = run(cfg, verbose=0, evaluator_wrapper=_RemoveStoreOnce(db, after=6))
    assert len(result.report.rows) == 12  # the search itself went on
    assert result.tracking_problem is not None
    assert "sync-mlflow" in result.tracking_problem
    assert str(db) in result.tracking_problem


def test_the_cli_exits_non_zero_when_mlflow_lost_the_record(monkeypatch, capsys, tmp_path):
    from paretune.platform import cli, launcher

    def fake_run(*args, **kwargs):
        return launcher.RunResult(tmp_path, None, None, None, tracking_problem="store gone; sync")

    monkeypatch.setattr(launcher, "run", fake_run)
    monkeypatch.setattr(cli, "_print_result", lambda *a, **k: None)
    assert cli.main(["run", "conf/quickstart.yaml"]) == 1
    assert "MLflow record incomplete: store gone; sync" in capsys.readouterr().err
