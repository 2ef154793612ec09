"""``paretune sync-mlflow``: make MLflow agree with the experiment folder, after an outage or
from scratch.

For every trial of an experiment directory (the trial journal, plus the per-trial
``result.json`` lines of trials the journal lacks), the nested run is created if missing, every
reported result is logged (results carry their own timestamp and step, so replaying one that is
already there adds nothing), the final tags are set and the run is ended with the trial's
status. A missing parent run (or a new tracking URI) gets a new parent run; the report's summary
and artifacts are logged to it and it is ended. Only JSON files are read, never Ray's
experiment state (which Ray may have pickled).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from paretune.platform.experiment import load_experiment, segment_dirs, write_state
from paretune.platform.journal import JOURNAL_FILE, TrialJournal, read_jsonl
from paretune.platform.parent_run import finish_parent_run, open_parent_run
from paretune.platform.prepare import Prepared, prepare
from paretune.platform.redact import redact_uri
from paretune.platform.results import search_report
from paretune.platform.tracking import (
    MAX_TAG_LENGTH,
    existing_trial_runs,
    meta_tags,
    result_metrics,
    split_result,
)
from paretune.platform.trainable import arch_from_config
from paretune.platform.writer_messages import short_reason

logger = logging.getLogger(__name__)

RESULT_FILE = "result.json"  # Ray's per-trial results (JSON lines; JsonLoggerCallback)


@dataclass
class SyncSummary:
    """What a sync did."""

    tracking_uri: str
    parent_run_id: str
    created: int = 0
    completed: int = 0
    already_complete: int = 0


def _results_by_trial(segment: Path) -> dict[str, list[dict[str, Any]]]:
    """``{trial id: results}`` from the ``result.json`` of each trial folder of a segment."""
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(segment.glob(f"*/{RESULT_FILE}")):
        results = read_jsonl(path)
        ids = {str(r["trial_id"]) for r in results if "trial_id" in r}
        if len(ids) == 1:
            out[ids.pop()] = results
    return out


def collect_trials(experiment_dir: Path) -> dict[str, dict[str, Any]]:
    """``{trial id: {"config", "results", "status", "error"}}`` from the journal and Ray's
    per-trial result files (a trial with results but no journal line was interrupted)."""
    trials: dict[str, dict[str, Any]] = {}
    for segment in segment_dirs(experiment_dir):
        for trial_id, results in _results_by_trial(segment).items():
            config = next((r["config"] for r in results if isinstance(r.get("config"), dict)), {})
            trials[trial_id] = {
                "config": config,
                "results": results,
                "status": "interrupted",
                "error": None,
            }
    journal = TrialJournal(experiment_dir / JOURNAL_FILE).load()
    finished = {_proposal_id(r.get("config")) for r in journal.values()} - {None}
    for trial_id in [t for t in trials if t not in journal]:
        if _proposal_id(trials[trial_id]["config"]) in finished:
            del trials[trial_id]  # an interrupted attempt of a proposal that ran again
    for trial_id, record in journal.items():
        entry = trials.setdefault(
            trial_id, {"config": record["config"], "results": [], "status": "ok", "error": None}
        )
        entry["status"] = record["status"]
        entry["error"] = record.get("error")
        entry["config"] = record.get("config") or entry["config"]
        if not entry["results"] and record["result"]:
            entry["results"] = [record["result"]]
    return trials


def _proposal_id(config: Any) -> Any:
    proposal = (config or {}).get("proposal") if isinstance(config, dict) else None
    return proposal.get("id") if isinstance(proposal, dict) else None


def sync_mlflow(experiment_dir: str | Path, tracking_uri: str | None = None) -> SyncSummary:
    """Bring MLflow up to date with the experiment directory; see the module docstring."""
    experiment_dir = Path(experiment_dir).expanduser().resolve()
    config, state = load_experiment(experiment_dir)
    configured = tracking_uri is None or tracking_uri == config.mlflow.tracking_uri
    if not configured:
        config = config.model_copy(
            update={"mlflow": config.mlflow.model_copy(update={"tracking_uri": tracking_uri})}
        )
    uri = config.mlflow.tracking_uri
    client = MlflowClient(uri)
    parent_id = state.get("parent_run_id") if configured else None
    if parent_id is not None:
        try:
            client.get_run(parent_id)
        except MlflowException:
            parent_id = None
    if parent_id is None:
        exp_id, parent_id = open_parent_run(config, state["run_name"], experiment_dir)
        if configured:
            state.update(mlflow_experiment_id=exp_id, parent_run_id=parent_id)
            write_state(experiment_dir, state)
    else:
        exp_id = state["mlflow_experiment_id"]
    sync_state = dict(state, mlflow_experiment_id=exp_id, parent_run_id=parent_id)

    prepared = prepare(config)
    summary = SyncSummary(redact_uri(uri), parent_id)
    sync_trial_runs(client, prepared, exp_id, parent_id, experiment_dir, summary)

    rep = search_report(prepared, experiment_dir)
    paths = rep.write(experiment_dir / "report")
    finish_parent_run(config, sync_state, rep, paths, experiment_dir)
    return summary


def sync_trial_runs(
    client: MlflowClient,
    prepared: Prepared,
    exp_id: str,
    parent_id: str,
    experiment_dir: Path,
    summary: SyncSummary,
) -> None:
    """Create the missing nested runs and complete the unfinished ones (journal + results).

    ``paretune resume`` calls this too: a trial that finished after Ray's last snapshot, just
    before the driver died, may have a journal record but no MLflow run yet.
    """
    config = prepared.config
    space = prepared.space
    existing = existing_trial_runs(client, exp_id, parent_id)
    for trial_id, trial in collect_trials(experiment_dir).items():
        run_id, status = existing.get(trial_id, (None, None))
        if status in ("FINISHED", "FAILED", "KILLED"):
            summary.already_complete += 1
            continue
        if run_id is None:
            tags = {
                "mlflow.parentRunId": parent_id,
                "trial_id": trial_id,
                "searcher": config.search.algorithm,
                **meta_tags(trial["config"]),
            }
            run_id = client.create_run(exp_id, run_name=f"trial-{trial_id}", tags=tags).info.run_id
            try:
                params = space.to_params(arch_from_config(space, trial["config"]))
                client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
            except (KeyError, ValueError):
                pass
            summary.created += 1
        else:
            summary.completed += 1
        metrics = [m for result in trial["results"] for m in result_metrics(result)]
        for i in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[i : i + 1000])
        _, tags = split_result(trial["results"][-1] if trial["results"] else {})
        tags["status"] = {"ok": "ok", "failed": "failed"}.get(trial["status"], "interrupted")
        if trial["error"]:
            tags["error"] = trial["error"][:MAX_TAG_LENGTH]
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        end = {"ok": "FINISHED", "failed": "FAILED"}.get(trial["status"], "KILLED")
        client.set_terminated(run_id, status=end)


def keep_interrupted_runs(tracking_uri: str, state: dict[str, Any]) -> int:
    """Give each interrupted trial's run back to the trial that ran its proposal again.

    A proposal whose trial a driver's death interrupted runs again after the resume, under a
    new Ray trial id when Ray's snapshot missed the trial, and the tracker gives that trial a
    new run. The interrupted attempt's run (RUNNING or KILLED, its proposal finished by
    exactly one other run) is the proposal's run: the new run's results, tags and files move
    into it, and the new run is deleted. Returns how many runs were kept so.
    """
    client = MlflowClient(tracking_uri)
    kept = 0
    try:
        runs = _runs_under(client, state["mlflow_experiment_id"], state["parent_run_id"])
        by_proposal: dict[str, list[Any]] = {}
        for run in runs:
            proposal = run.data.tags.get("proposal_id")
            if proposal is not None:
                by_proposal.setdefault(proposal, []).append(run)
        for group in by_proposal.values():
            stale = [r for r in group if r.info.status in ("RUNNING", "KILLED")]
            done = [r for r in group if r.info.status in ("FINISHED", "FAILED")]
            if len(stale) == 1 and len(done) == 1:
                _move_run(client, done[0], stale[0].info.run_id)
                kept += 1
    except Exception as exc:  # noqa: BLE001 - the search is done; MLflow is a view of it
        logger.warning(
            "MLflow runs of interrupted trials not kept (%s); run `paretune sync-mlflow`",
            short_reason(exc, tracking_uri),
        )
    return kept


def _runs_under(client: MlflowClient, exp_id: str, parent_id: str) -> list[Any]:
    out: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            [exp_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
            max_results=1000,
            page_token=token,
        )
        out += list(page)
        token = page.token
        if not token:
            return out


def _move_run(client: MlflowClient, new: Any, old_id: str) -> None:
    """Log ``new``'s metrics, params, tags and artifacts to run ``old_id``, end it as ``new``
    ended, and delete ``new``."""
    new_id = new.info.run_id
    metrics = [m for key in new.data.metrics for m in client.get_metric_history(new_id, key)]
    for i in range(0, len(metrics), 1000):
        client.log_batch(old_id, metrics=metrics[i : i + 1000])
    old_params = client.get_run(old_id).data.params
    params = [Param(k, v) for k, v in new.data.params.items() if k not in old_params]
    tags = [RunTag(k, v) for k, v in new.data.tags.items() if not k.startswith("mlflow.")]
    client.log_batch(old_id, params=params, tags=tags)
    if client.list_artifacts(new_id):
        with tempfile.TemporaryDirectory() as tmp:
            local = client.download_artifacts(new_id, "", tmp)
            client.log_artifacts(old_id, local)
    client.set_terminated(old_id, status=new.info.status, end_time=new.info.end_time)
    client.delete_run(new_id)


def sync_lost_trial_runs(prepared: Prepared, state: dict[str, Any], experiment_dir: Path) -> None:
    """Give MLflow runs to trials whose writes died with the previous driver (journal only)."""
    uri = prepared.config.mlflow.tracking_uri
    try:
        sync_trial_runs(
            MlflowClient(uri),
            prepared,
            state["mlflow_experiment_id"],
            state["parent_run_id"],
            experiment_dir,
            SyncSummary(redact_uri(uri), state["parent_run_id"]),
        )
    except Exception as exc:  # noqa: BLE001 - `paretune sync-mlflow` can do it later
        logger.warning(
            "MLflow runs of earlier trials not checked (%s); run `paretune sync-mlflow %s`",
            short_reason(exc, uri),
            experiment_dir,
        )
