"""The opt-in whole-run inserts into an SQL MLflow store (mlflow_sql) against MlflowClient's own
calls, and their refusal on an MLflow version or schema they were not tested on."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import threading

import pytest
from mlflow.tracking import MlflowClient

from paretune.platform import mlflow_sql
from paretune.platform.mlflow_writer import WriterCore
from paretune.platform.parent_run import enable_sqlite_wal
from paretune.platform.writer_messages import (
    Close,
    End,
    MetricPoint,
    Result,
    Start,
    WriterSettings,
    WriterWarning,
)

START, END = 1_700_000_000_000, 1_700_000_004_321


def trial_messages(trial_id: str, status: str = "FINISHED") -> list:
    """One trial's messages as the tracker sends them, with awkward metrics on purpose."""
    m = MetricPoint
    return [
        Start(
            trial_id, {"searcher": "random", "arch": "|x~0|"}, {"e0": "conv", "e1": "skip"}, START
        ),
        Result(trial_id, [m("accuracy", 0.5, START + 10, 1), m("loss", 2.0, START + 10, 1)]),
        # An exact repeat (stored once), a later step with a smaller value (still the latest),
        # NaN and infinities (stored as MLflow stores them).
        Result(trial_id, [m("accuracy", 0.5, START + 10, 1), m("accuracy", 0.25, START + 20, 2)]),
        Result(
            trial_id, [m("nan_metric", math.nan, START + 30, 2), m("big", math.inf, START + 30, 2)]
        ),
        End(trial_id, status, {"status": "ok", "pareto": "front", "source": "table"}, END),
    ]


def write(
    uri: str, exp: str, parent: str, trial_ids: list[str], sql_insert: bool, replies=None
) -> WriterCore:
    settings = WriterSettings(uri, exp, parent, sql_insert=sql_insert, batch_s=0.01)
    core = WriterCore(settings, emit=(replies.append if replies is not None else lambda m: None))
    for i, trial_id in enumerate(trial_ids):
        for message in trial_messages(trial_id, "FAILED" if i % 2 else "FINISHED"):
            core.submit(message)
    core.submit(Close())
    thread = threading.Thread(target=core.run)
    thread.start()
    thread.join(timeout=120)
    assert core.finished and not core.pending()
    return core


def view(client: MlflowClient, exp: str, parent: str) -> dict[str, dict]:
    """Everything MlflowClient reads back about the trial runs of ``parent``, by trial id."""
    out = {}
    for run in client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent}'"):
        info, data, run_id = run.info, run.data, run.info.run_id
        history = {
            key: sorted(
                (m.key, m.step, m.timestamp, m.value if not math.isnan(m.value) else "nan")
                for m in client.get_metric_history(run_id, key)
            )
            for key in data.metrics
        }
        out[data.tags["trial_id"]] = {
            "info": (
                info.status,
                info.start_time,
                info.end_time,
                info.run_name,
                info.user_id,
                info.lifecycle_stage,
                info.experiment_id,
                info.artifact_uri.replace(run_id, "<id>"),
            ),
            "tags": {k: v for k, v in data.tags.items() if k != "mlflow.parentRunId"},
            "params": data.params,
            "metrics": {k: v if not math.isnan(v) else "nan" for k, v in data.metrics.items()},
            "history": history,
        }
    return out


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("sql")
    enable_sqlite_wal(uri)
    return uri, client, exp


def test_inserted_runs_read_back_exactly_like_client_written_ones(store):
    uri, client, exp = store
    trials = [f"t{i}" for i in range(5)]
    parents = [client.create_run(exp).info.run_id for _ in range(2)]
    by_client = write(uri, exp, parents[0], trials, sql_insert=False)
    by_insert = write(uri, exp, parents[1], trials, sql_insert=True)
    assert (by_client.inserted, by_insert.inserted) == (0, 5)  # each way was the one taken
    a, b = view(client, exp, parents[0]), view(client, exp, parents[1])
    assert sorted(a) == trials and a == b
    assert a["t0"]["info"][:3] == ("FINISHED", START, END)
    assert a["t1"]["info"][0] == "FAILED"
    assert a["t0"]["metrics"]["accuracy"] == 0.25  # the latest step, as MLflow keeps it
    assert len(a["t0"]["history"]["accuracy"]) == 2  # the exact repeat stored once


def test_a_failed_insert_falls_back_to_the_client_calls_without_duplicates(store, monkeypatch):
    uri, client, exp = store
    parent = client.create_run(exp).info.run_id
    real = mlflow_sql.insert_finished_runs
    calls = []

    def fail_after_commit(*args, **kwargs):
        # The worst case: the transaction went through but the writer saw an error.
        calls.append(real(*args, **kwargs))
        raise RuntimeError("connection lost after the commit")

    monkeypatch.setattr(mlflow_sql, "insert_finished_runs", fail_after_commit)
    core = write(uri, exp, parent, ["a", "b", "c"], sql_insert=True)
    assert calls and core.inserted == 0
    runs = view(client, exp, parent)
    assert sorted(runs) == ["a", "b", "c"]  # each once: the client path adopted the runs
    assert runs["b"]["info"][0] == "FAILED" and runs["a"]["params"] == {"e0": "conv", "e1": "skip"}


def test_only_plain_sqlalchemy_stores_take_inserts(tmp_path):
    assert mlflow_sql.sql_store(MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")) is not None
    assert mlflow_sql.sql_store(MlflowClient("http://127.0.0.1:9")) is None
    too_many = mlflow_sql.FinishedRun(tags={f"t{i}": "v" for i in range(101)})
    assert not too_many.fits_one_batch()


@pytest.mark.parametrize("wrong", ["version", "schema"])
def test_inserts_are_refused_on_an_untested_mlflow_or_schema(store, monkeypatch, wrong):
    uri, client, exp = store
    parent = client.create_run(exp).info.run_id
    if wrong == "version":
        monkeypatch.setattr(mlflow_sql, "TESTED_MLFLOW", frozenset({"2.0.0"}))
    else:
        monkeypatch.setattr(mlflow_sql, "TESTED_SCHEMA", frozenset({"0123456789ab"}))
    replies: list = []
    core = write(uri, exp, parent, ["a", "b", "c"], sql_insert=True, replies=replies)
    assert core.inserted == 0  # every run through MlflowClient
    assert sorted(view(client, exp, parent)) == ["a", "b", "c"]
    warnings = [r.text for r in replies if isinstance(r, WriterWarning)]
    assert len(warnings) == 1 and "PARETUNE_MLFLOW_SQL_INSERT=1 ignored" in warnings[0]
    assert ("2.0.0" if wrong == "version" else "0123456789ab") in warnings[0]


def test_the_tested_versions_are_the_installed_ones(store):
    """A version bump fails here (not silently): re-run the comparison above, then add it."""
    import mlflow

    uri, client, _ = store
    assert mlflow.__version__ in mlflow_sql.TESTED_MLFLOW
    store_, reason = mlflow_sql.tested_sql_store(client)
    assert reason is None and store_ is not None


def test_the_default_path_never_loads_the_inserts(store, tmp_path):
    """Off by default: a tracker's whole session never imports mlflow_sql."""
    uri, client, exp = store
    parent = client.create_run(exp).info.run_id
    script = textwrap.dedent(
        f"""
        import sys, threading
        from paretune.platform.mlflow_writer import WriterCore
        from paretune.platform.writer_messages import Close, End, Start, WriterSettings
        core = WriterCore(WriterSettings({uri!r}, {exp!r}, {parent!r}, batch_s=0.01), print)
        core.submit(Start("a", {{}}, {{"e0": "conv"}}))
        core.submit(End("a", "FINISHED", {{"status": "ok"}}))
        core.submit(Close())
        core.run()
        assert core.inserted == 0 and core.runs
        print("mlflow_sql loaded:", "paretune.platform.mlflow_sql" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert "mlflow_sql loaded: False" in out.stdout, out.stderr[-2000:]
