"""Opt-in: finished trial runs inserted straight into MLflow's SQL tables, many per transaction.

Off by default: trial runs go through ``MlflowClient``'s public calls (``create_run``,
``log_batch``, ``set_terminated``). With ``PARETUNE_MLFLOW_SQL_INSERT=1`` and an SQL store
(the tracking URI is the database), a trial already over when the writer gets to it is instead
inserted into the tables of MLflow's own models (``mlflow.store.tracking.dbmodels``) through
the store's own session: one executemany per table and one commit per batch (about 0.7 ms per
trial instead of 19 on 2 cores, ``benchmarks/mlflow_writes.py``).

This uses MLflow internals (the models, the store behind ``MlflowClient``, private validators,
and its rule for the latest metric value), so it is refused, with one warning, unless the
installed MLflow version is in :data:`TESTED_MLFLOW` and the store's schema (its alembic
revision) is in :data:`TESTED_SCHEMA`: a schema change that does not raise would otherwise
diverge silently. ``tests/platform/test_mlflow_sql.py`` writes a trial both ways and compares
everything ``MlflowClient`` reads back. Only a store that is exactly ``SqlAlchemyStore`` is
written this way; anything else, and any batch that fails, goes through the client calls.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from paretune.platform.writer_messages import MAX_METRICS, MAX_PARAMS, MAX_TAGS

# The MLflow versions and store schemas (alembic revisions) the inserts were tested on.
TESTED_MLFLOW = frozenset({"3.17.2"})
TESTED_SCHEMA = frozenset({"dc11669786a5"})


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


def schema_revision(store: Any) -> str | None:
    """The alembic revision of an SQL store's schema (``None`` when it has none)."""
    from sqlalchemy import text

    with store.ManagedSessionMaker() as session:
        return session.execute(text("SELECT version_num FROM alembic_version")).scalar()


def tested_sql_store(client: Any) -> tuple[Any | None, str | None]:
    """``(store, None)`` when the inserts may be used on ``client``'s store, else
    ``(None, why not)``: not an SQL store, or an MLflow version or schema not tested."""
    import mlflow

    if mlflow.__version__ not in TESTED_MLFLOW:
        tested = ", ".join(sorted(TESTED_MLFLOW))
        return None, f"MLflow {mlflow.__version__} is not a tested version ({tested})"
    store = sql_store(client)
    if store is None:
        return None, "the tracking store is not an SQL database"
    revision = schema_revision(store)
    if revision not in TESTED_SCHEMA:
        tested = ", ".join(sorted(TESTED_SCHEMA))
        return None, f"store schema {revision} is not a tested revision ({tested})"
    return store, None


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
