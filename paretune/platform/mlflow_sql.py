"""Finished trial runs inserted into an SQL-backed MLflow store, many per transaction.

Through ``MlflowClient`` a trial costs three store calls (``create_run``, ``log_batch``,
``set_terminated``). On an SQLAlchemy store (the tracking URI is the database: ``sqlite:``,
``postgresql:``, ``mysql:``) each call opens sessions of its own and commits: about 19 ms of
SQLAlchemy work per trial on a 2-core machine, more than Ray Tune's own work per tabular
trial. A short trial is over before the writer gets to it, so its whole run is known at once:
:func:`insert_finished_runs` inserts such runs into the tables of MLflow's own models
(``mlflow.store.tracking.dbmodels``) through the store's own session, one executemany per
table and one commit for a batch: about 0.7 ms per trial (both measured side by side by
``benchmarks/mlflow_writes.py``; through the ORM's objects it was 4.5 ms).

The rows are the ones the three calls make (``tests/platform/test_mlflow_sql.py`` writes a
trial both ways and compares everything ``MlflowClient`` reads back), and values pass MLflow's
own validation first. Only a store that is exactly ``SqlAlchemyStore`` is written this way (not
a REST server, not a subclass that scopes queries); the writer falls back to the client calls
for anything else, and for any batch that fails. ``PARETUNE_MLFLOW_SQL_INSERT=0`` turns the
inserts off (every run through the client calls).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# MLflow's limits for one log_batch (the writer splits bigger batches; a run with more is
# not inserted whole).
MAX_METRICS, MAX_PARAMS, MAX_TAGS = 1000, 100, 100


@dataclass
class FinishedRun:
    """Everything of one finished trial run: written in one go."""

    tags: dict[str, str]  # including mlflow.parentRunId and mlflow.runName
    params: dict[str, str] = field(default_factory=dict)
    metrics: Sequence[tuple[str, float, int, int]] = ()  # (key, value, timestamp ms, step)
    status: str = "FINISHED"
    start_ms: int = 0
    end_ms: int = 0

    def fits_one_batch(self) -> bool:
        return (
            len(self.metrics) <= MAX_METRICS
            and len(self.params) <= MAX_PARAMS
            and len(self.tags) <= MAX_TAGS
        )


def sql_store(client: Any) -> Any | None:
    """The client's store when it is exactly MLflow's ``SqlAlchemyStore``, else ``None``."""
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        store = client._tracking_client.store
    except Exception:  # noqa: BLE001 - another MLflow layout: the client calls do it all
        return None
    return store if type(store) is SqlAlchemyStore else None


def validate(run: FinishedRun) -> FinishedRun:
    """``run`` with its values as MLflow's ``log_batch`` accepts them; raises ``MlflowException``."""
    from mlflow.entities import Metric, Param, RunStatus, RunTag
    from mlflow.utils.validation import _validate_batch_log_data, _validate_param_keys_unique

    RunStatus.from_string(run.status)  # raises for an unknown status
    metrics, params, tags = _validate_batch_log_data(
        [Metric(*m) for m in run.metrics],
        [Param(k, v) for k, v in run.params.items()],
        [RunTag(k, v) for k, v in run.tags.items()],
    )
    _validate_param_keys_unique(params)
    return FinishedRun(
        tags={t.key: t.value for t in tags},
        params={p.key: p.value for p in params},
        metrics=[(m.key, m.value, m.timestamp, m.step) for m in metrics],
        status=run.status,
        start_ms=run.start_ms,
        end_ms=run.end_ms,
    )


def insert_finished_runs(
    store: Any, experiment_id: str, runs: Mapping[str, FinishedRun]
) -> dict[str, str]:
    """Insert ``runs`` (``{key: run}``, already :func:`validate`-d) in one transaction.

    Returns ``{key: run id}``. Either every run is written or, on an exception, none.
    """
    from mlflow.entities import LifecycleStage, SourceType
    from mlflow.store.tracking.dbmodels.models import (
        SqlLatestMetric,
        SqlMetric,
        SqlParam,
        SqlRun,
        SqlTag,
    )
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME, MLFLOW_USER
    from mlflow.utils.uri import append_to_uri_path
    from sqlalchemy import insert

    experiment = store.get_experiment(experiment_id)
    store._check_experiment_is_active(experiment)
    made: dict[str, str] = {}
    rows: dict[Any, list[dict[str, Any]]] = {
        table: [] for table in (SqlRun, SqlTag, SqlParam, SqlMetric, SqlLatestMetric)
    }
    for key, run in runs.items():
        run_id = uuid.uuid4().hex
        rows[SqlRun].append(
            {
                "run_uuid": run_id,
                "name": run.tags[MLFLOW_RUN_NAME],
                "source_type": SourceType.to_string(SourceType.UNKNOWN),
                "source_name": "",
                "entry_point_name": "",
                "user_id": run.tags.get(MLFLOW_USER, "unknown"),
                "status": run.status,
                "start_time": run.start_ms,
                "end_time": run.end_ms,
                "deleted_time": None,
                "source_version": "",
                "lifecycle_stage": LifecycleStage.ACTIVE,
                "artifact_uri": append_to_uri_path(
                    experiment.artifact_location, run_id, store.ARTIFACTS_FOLDER_NAME
                ),
                "experiment_id": int(experiment_id),
            }
        )
        rows[SqlTag] += [{"key": k, "value": v, "run_uuid": run_id} for k, v in run.tags.items()]
        rows[SqlParam] += [
            {"key": k, "value": v, "run_uuid": run_id} for k, v in run.params.items()
        ]
        latest: dict[str, dict[str, Any]] = {}
        for m in dict.fromkeys(run.metrics):  # an exact repeat is stored once, as MLflow does
            is_nan, value = store.sanitize_metric_value(float(m[1]))
            row = {"key": m[0], "value": value, "timestamp": m[2], "step": m[3]}
            row.update(is_nan=is_nan, run_uuid=run_id)
            rows[SqlMetric].append(row)
            # The latest value of a key: the greatest (step, timestamp, value), as MLflow keeps it.
            old = latest.get(m[0])
            if old is None or (m[3], m[2], value) > (old["step"], old["timestamp"], old["value"]):
                latest[m[0]] = row
        rows[SqlLatestMetric] += latest.values()
        made[key] = run_id
    # Core inserts (one executemany per table) into the tables of MLflow's own models: the ORM's
    # unit of work would cost more than the rest together.
    with store.ManagedSessionMaker(read_only=False) as session:
        for model, values in rows.items():
            if values:
                session.execute(insert(model.__table__), values)
    return made
