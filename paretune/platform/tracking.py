"""MLflow tracking: one parent run per experiment, one nested run per trial.

:class:`MlflowTracker` is a driver-side Ray Tune callback. It hands each trial event, as a typed
message (:mod:`paretune.platform.writer_messages`), to a writer
(:mod:`paretune.platform.mlflow_writer`) that runs in its own process, so MLflow's work runs
beside Ray Tune's driver loop instead of under its GIL. The writer uses ``MlflowClient``'s
public calls (no global active-run state): per trial one ``create_run``, one ``log_batch`` per
batch of results rather than one request per metric, and ``set_terminated`` (FINISHED, or
FAILED with the reason). It never stops the search when the tracking server is unreachable:
failed writes are queued and retried in order, and each kind of failure is reported once with
the ``paretune sync-mlflow`` hint; a store that lost the search is named by
:attr:`MlflowTracker.store_problem`.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import pickle
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from mlflow.entities import Metric
from ray.tune import Callback

from paretune.platform.mlflow_writer import existing_trial_runs as existing_trial_runs
from paretune.platform.redact import redact_uri as redact_uri
from paretune.platform.writer_link import (
    ProcessWriter,
    Spool,
    ThreadWriter,
    Unwritten,
    file_identity,
    sqlite_file,
)
from paretune.platform.writer_messages import (
    Cells,
    End,
    Flush,
    Flushed,
    MetricPoint,
    Pictured,
    Reply,
    Result,
    RunMade,
    RunsFound,
    Start,
    StoreProblem,
    TrialMessage,
    TrialWritten,
    WriterSettings,
    WriterWarning,
    sync_hint,
)
from paretune.search_algos.pareto import RunningFront

if TYPE_CHECKING:
    from paretune.objectives import ObjectiveSet

logger = logging.getLogger(__name__)

# Keys Ray adds to every result; they are not the trial's own metrics.
RAY_RESULT_KEYS = frozenset(
    {
        "config",
        "trial_id",
        "date",
        "hostname",
        "node_ip",
        "pid",
        "timestamp",
        "training_iteration",
        "done",
        "experiment_tag",
        "time_this_iter_s",
        "time_since_restore",
        "iterations_since_restore",
        "timesteps_since_restore",
        "checkpoint_dir_name",
        "should_checkpoint",
        "experiment_id",
        "timesteps_total",
        "episodes_total",
        "final",
    }
)
MAX_TAG_LENGTH = 5000


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def split_result(result: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """A Ray result as (numeric metrics, string tags), without Ray's bookkeeping keys."""
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    for key, value in result.items():
        if key in RAY_RESULT_KEYS:
            continue
        if is_number(value):
            if math.isfinite(float(value)):
                metrics[key] = float(value)
            else:
                tags[f"nonfinite/{key}"] = str(value)
        elif isinstance(value, str):
            tags[key] = value[:MAX_TAG_LENGTH]
    return metrics, tags


def result_metrics(result: Mapping[str, Any]) -> list[Metric]:
    """A Ray result's metrics for MLflow, stamped with the result's own time and iteration.

    Using the result's timestamp (not the time of logging) makes logging idempotent: the store
    drops an exact duplicate, so ``paretune sync-mlflow`` can replay results safely.
    """
    metrics, _ = split_result(result)
    step = int(result.get("training_iteration", 0) or 0)
    ts = int(float(result.get("timestamp") or time.time()) * 1000)
    return [Metric(k, v, ts, step) for k, v in metrics.items()]


def meta_tags(config: Mapping[str, Any]) -> dict[str, str]:
    """Tags for a trial from its config: architecture and the searcher's proposal metadata."""
    tags: dict[str, str] = {}
    if "arch" in config:
        tags["arch"] = str(config["arch"])
    proposal = config.get("proposal") or {}
    if "id" in proposal:
        tags["proposal_id"] = str(proposal["id"])
    for key, value in (proposal.get("meta") or {}).items():
        if value is None:
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        tags[f"meta.{key}"] = text[:MAX_TAG_LENGTH]
    return tags


class MlflowTracker(Callback):
    """Ray Tune callback that mirrors every trial into a nested MLflow run.

    The callback itself only hands plain data to a writer (see
    :mod:`paretune.platform.mlflow_writer`), by default a separate process, so MLflow's own
    work never holds up Ray Tune's driver loop. ``PARETUNE_MLFLOW_WRITER=thread`` keeps the
    writer in a thread of the driver instead.

    Args:
        tracking_uri: MLflow tracking URI.
        experiment_id: MLflow experiment id.
        parent_run_id: the experiment's parent run.
        searcher: the search algorithm's name (a tag on each trial run).
        arch_params: turns a trial config into ``{decision: option}`` params.
        retry_s: seconds between attempts while the tracking store is unreachable.
        objectives: when given, each trial run gets its ``pareto`` tag as it ends: ``front``
            while no earlier trial dominates it, else ``dominated`` (for good), or ``failed``.
            The launcher corrects the few overturned ``front`` tags at the end
            (:func:`paretune.platform.artifacts.tag_pareto` writes only changed tags).
        wait_at_end: wait for the writes in ``on_experiment_end``. The launcher passes False
            and calls :meth:`finish_writes` itself after the work that needs no run ids.
        experiment_dir: the experiment folder, named in the ``paretune sync-mlflow`` hints.

    After :meth:`finish_writes`, :attr:`store_problem` says whether the store lost this
    search's record (a SQLite file removed or replaced during the search, or the experiment or
    parent run gone from the store).
    """

    # Restarts of a writer process that died before it falls back to a thread.
    MAX_RESTARTS = 3

    def __init__(
        self,
        tracking_uri: str,
        experiment_id: str,
        parent_run_id: str,
        searcher: str,
        arch_params: Callable[[Mapping[str, Any]], dict[str, str]] | None = None,
        retry_s: float = 5.0,
        objectives: ObjectiveSet | None = None,
        wait_at_end: bool = True,
        experiment_dir: str | os.PathLike | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.searcher = searcher
        self.arch_params = arch_params
        self.retry_s = retry_s
        self.objectives = objectives
        self.wait_at_end = wait_at_end
        self.experiment_dir = None if experiment_dir is None else str(experiment_dir)
        self.runs: dict[str, str] = {}
        self.ended: set[str] = set()
        self._init_transient()
        # Started now, not in setup(): the writer imports MLflow and opens the store while
        # Ray Tune builds the search.
        self._w()

    def _init_transient(self) -> None:
        self.writer: ProcessWriter | ThreadWriter | None = None
        # The SQLite file as the search found it: one removed or replaced is reported.
        self._store_file = sqlite_file(self.tracking_uri)
        self._store_identity = file_identity(self._store_file)
        self._store_problems: list[str] = []  # reported by the writer
        self._flush_tokens = itertools.count(1)
        self._started: set[str] = set()  # trials started and not ended (in this driver)
        # Every message of a trial, pickled and spooled to disk, until the writer says it is
        # all written: sent again to a new writer if the process dies. A trial ended and not
        # in here is complete in MLflow (written, or so before a restart).
        self._unwritten: dict[str, Unwritten] = {}
        self._spool = Spool()
        self._restarts = 0
        self._flushed = 0
        self._front = RunningFront()
        # The pareto tags sent as trials ended (this driver only): "dominated" is every such
        # trial not named here, so memory grows with the front, not with every trial.
        self._ended_elsewhere: set[str] = set(self.ended)  # ended before, or in another driver
        self._tagged_front: set[str] = set()
        self._tagged_failed: set[str] = set()
        self._progress_at = 0.0  # when the writer last reported a write (see flush)
        self.pictured: set[str] = set()  # trials whose runs got cell.png from the writer

    @property
    def pareto_tags(self) -> Mapping[str, str]:
        """``{trial id: pareto tag}`` sent as trials ended, in this driver (a read-only view)."""
        return _SentParetoTags(self)

    def _written(self) -> set[str]:
        """Trials whose runs are complete in MLflow."""
        return {t for t in self.ended if t not in self._unwritten}

    def __getstate__(self) -> dict[str, Any]:
        # Ray pickles the callback with the tuner; the writer and its queue stay behind.
        keep = ("tracking_uri", "experiment_id", "parent_run_id", "searcher", "arch_params")
        keep += ("experiment_dir",)
        state = {k: self.__dict__[k] for k in keep}
        state["objectives"] = self.objectives  # a restored tracker waits at the end
        state["wait_at_end"] = True
        state.update(retry_s=self.retry_s, runs=dict(self.runs), ended=set(self.ended))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("experiment_dir", None)
        self.__dict__.update(state)
        self._init_transient()

    def get_state(self) -> dict[str, Any]:
        self._drain()
        return {"runs": dict(self.runs), "ended": sorted(self.ended)}

    def set_state(self, state: dict[str, Any]) -> None:
        # Trials ended before a restart count as written; those whose writes died with the
        # driver are given runs by `paretune resume` afterwards (sync.sync_trial_runs).
        self.runs = dict(state.get("runs", {}))
        self.ended = set(state.get("ended", []))
        self._ended_elsewhere = set(self.ended)

    def setup(self, **info: Any) -> None:
        self._w()

    # ------------------------------------------------------------------ the writer
    def _w(self) -> ProcessWriter | ThreadWriter:
        if self.writer is None:
            self.writer = self._start_writer()
        return self.writer

    def _start_writer(self) -> ProcessWriter | ThreadWriter:
        settings = WriterSettings(
            tracking_uri=self.tracking_uri,
            experiment_id=self.experiment_id,
            parent_run_id=self.parent_run_id,
            runs=dict(self.runs),
            ended=tuple(sorted(self._written())),
            retry_s=self.retry_s,
            # Opt-in, off by default: whole-run inserts into MLflow's tables (see mlflow_sql).
            sql_insert=os.environ.get("PARETUNE_MLFLOW_SQL_INSERT", "0") == "1",
            experiment_dir=self.experiment_dir,
        )
        mode = os.environ.get("PARETUNE_MLFLOW_WRITER", "process")
        if mode == "process" and self._restarts <= self.MAX_RESTARTS:
            try:
                return ProcessWriter(settings)
            except Exception as exc:  # noqa: BLE001 - no process: a thread does the same
                logger.warning("MLflow writer process not started (%s); writing from a thread", exc)
        return ThreadWriter(settings)

    def _apply(self, message: Reply) -> None:
        if isinstance(message, RunMade | TrialWritten | Pictured):
            self._progress_at = time.monotonic()
        if isinstance(message, RunMade):
            unwritten = self._unwritten.get(message.trial_id)
            # Keyed by the driver's own copy of the trial id, not a second one from the reply.
            key = message.trial_id if unwritten is None else unwritten.trial_id
            self.runs[key] = message.run_id
        elif isinstance(message, TrialWritten):
            unwritten = self._unwritten.pop(message.trial_id, None)
            if unwritten is not None:
                self._spool.release(unwritten.refs)
        elif isinstance(message, Pictured):
            self.pictured.update(message.trial_ids)
        elif isinstance(message, Flushed):
            self._flushed = max(self._flushed, message.token)
        elif isinstance(message, RunsFound):
            self.runs.update(message.runs)
            self.ended.update(message.ended)
            self._ended_elsewhere.update(message.ended)
        elif isinstance(message, WriterWarning):
            logger.warning("%s", message.text)
        elif isinstance(message, StoreProblem):
            self._store_problems.append(message.text)

    def _drain(self, timeout: float = 0.0) -> None:
        if self.writer is not None:
            for message in self.writer.replies_ready(timeout):
                self._apply(message)

    def _send(self, message: TrialMessage) -> None:
        # Kept pickled and on disk (see writer_link.Spool): a writer behind a slow server can fall behind
        # by more trials the longer the search runs.
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        trial_id = message.trial_id
        unwritten = self._unwritten.get(trial_id)
        if unwritten is None:
            unwritten = self._unwritten[trial_id] = Unwritten(trial_id)
        unwritten.refs.append(self._spool.put(data))
        if not self._w().send_pickled(data):
            self._restart_writer()
        self._drain()

    def _restart_writer(self) -> None:
        """The writer process died: a new one gets every message not known to be written."""
        old = self._w()
        self._drain()  # its last replies
        self._restarts += 1
        logger.warning(
            "MLflow writer process stopped (exit code %s); a new one resends %d trials' writes",
            old.exit_code(),
            len(self._unwritten),
        )
        self.writer = self._start_writer()
        for unwritten in list(self._unwritten.values()):
            for ref in unwritten.refs:
                self.writer.send_pickled(self._spool.get(ref))

    @property
    def store_problem(self) -> str | None:
        """Why the store no longer holds this search's record, with the sync-mlflow hint;
        ``None`` while it does (as far as can be told)."""
        self._drain()
        problem = self._store_problems[0] if self._store_problems else None
        if problem is None and self._store_identity is not None:
            now = file_identity(self._store_file)
            if now is None:
                problem = f"the MLflow store {self._store_file} was removed during the search"
            elif now != self._store_identity:
                problem = f"the MLflow store {self._store_file} was replaced during the search"
        if problem is None:
            return None
        return f"{problem}: its record of this search is lost; {sync_hint(self.experiment_dir)}"

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything sent so far is written.

        False when ``timeout`` seconds pass without progress: a slow store that keeps writing
        (a run made, a trial complete) is waited for, a stalled one is not.
        """
        self._progress_at = time.monotonic()
        while True:
            token = next(self._flush_tokens)
            if not self._w().send(Flush(token)):
                self._restart_writer()
                continue
            while self._flushed < token:
                left = self._progress_at + timeout - time.monotonic()
                if left <= 0 or self._store_problems:
                    return False  # no progress, or a store that lost the search: no waiting
                self._drain(timeout=min(left, 1.0))
                if self._flushed < token and not self._w().alive():
                    break
            else:
                return True
            self._restart_writer()

    # ------------------------------------------------------------------ trial events
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id in self.ended:
            return  # finished before a restart: replayed from the journal, already complete
        self._start(trial)

    def _start(self, trial: Any) -> None:
        trial_id = trial.trial_id
        self._started.add(trial_id)
        tags = {"searcher": self.searcher, **meta_tags(trial.config)}
        params = self.arch_params(trial.config) if self.arch_params else {}
        params = {k: str(v) for k, v in params.items()}
        self._send(Start(trial_id, tags, params, int(time.time() * 1000)))

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        if trial.trial_id in self.ended:
            return  # finished before a restart: replayed from the journal, already complete
        if trial.trial_id not in self._started:
            self._start(trial)
        self._send_result(trial, result)

    def _send_result(self, trial: Any, result: Mapping[str, Any]) -> None:
        batch = [MetricPoint(m.key, m.value, m.timestamp, m.step) for m in result_metrics(result)]
        if batch:
            self._send(Result(trial.trial_id, batch))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, "FINISHED", None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, "FAILED", error_text(trial))

    def _end(self, trial: Any, status: str, error: str | None) -> None:
        trial_id = trial.trial_id
        if trial_id in self.ended:
            return
        self.ended.add(trial_id)
        if trial_id not in self._started:
            self._start(trial)
        self._send_end(trial, status, error)
        self._started.discard(trial_id)

    def _send_end(self, trial: Any, status: str, error: str | None) -> None:
        result = trial.last_result or {}
        _, tags = split_result(result)
        tags["status"] = "failed" if error is not None else "ok"
        if error is not None:
            tags["error"] = error[:MAX_TAG_LENGTH]
        if self.objectives is not None:
            tags["pareto"] = tag = self._pareto_tag(result, error)
            if tag == "front":
                self._tagged_front.add(trial.trial_id)
            elif tag == "failed":
                self._tagged_failed.add(trial.trial_id)
        self._send(End(trial.trial_id, status, tags, int(time.time() * 1000)))

    def _pareto_tag(self, result: Mapping[str, Any], error: str | None) -> str:
        """``front``, ``dominated`` or ``failed`` for a trial ending with ``result``.

        Failed exactly as the report says (an error, or an objective missing or not finite).
        """
        objectives = self.objectives
        values = {name: result.get(name) for name in objectives.names}
        if error is not None or not objectives.is_valid(values):
            return "failed"
        values = {k: float(v) for k, v in values.items()}
        on_front = self._front.add(objectives.vector(values), objectives.violation(values))
        return "front" if on_front else "dominated"

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.wait_at_end:
            self.finish_writes()
        else:
            self.flush(timeout=0)  # no waiting: the writer drains while the driver goes on

    def log_cell_pictures(self, archs: Mapping[str, str]) -> None:
        """Have the writer draw ``cell.png`` for trials (``{trial id: arch}``) and log it.

        It does so after the trials' own writes, beside whatever the driver does meanwhile;
        after :meth:`finish_writes`, :attr:`pictured` names the trials done (a writer that
        died or failed leaves the rest to the caller).
        """
        if self.writer is not None and archs:
            self._w().send(Cells(dict(archs)))

    def finish_writes(self, timeout: float = 120.0) -> bool:
        """Wait until every write is made, then let the writer go.

        False after ``timeout`` seconds without progress (the store is unreachable); writes
        still queued then are the writer's to finish (it outlives this call) or
        ``paretune sync-mlflow``'s.
        """
        if self.writer is None:
            return True
        written = self.flush(timeout=timeout)
        if not written and not self._store_problems:
            logger.warning(
                "no MLflow write for %.0f s: writes of %d trials still queued at the end; %s",
                timeout,
                len(self._unwritten),
                sync_hint(self.experiment_dir),
            )
        writer, self.writer = self._w(), None
        writer.close(wait=10 if written else 0)
        return written


class _SentParetoTags(Mapping[str, str]):
    """``{trial id: pareto tag}`` a tracker sent: every trial it ended, ``dominated`` unless
    its sets of ``front`` and ``failed`` trials name it (see :attr:`MlflowTracker.pareto_tags`)."""

    def __init__(self, tracker: MlflowTracker) -> None:
        self._tracker = tracker

    def _tagged_here(self, trial_id: str) -> bool:
        t = self._tracker
        return t.objectives is not None and trial_id not in t._ended_elsewhere

    def __getitem__(self, trial_id: str) -> str:
        t = self._tracker
        if trial_id not in t.ended or not self._tagged_here(trial_id):
            raise KeyError(trial_id)
        if trial_id in t._tagged_front:
            return "front"
        return "failed" if trial_id in t._tagged_failed else "dominated"

    def __iter__(self) -> Iterator[str]:
        return (i for i in self._tracker.ended if self._tagged_here(i))

    def __len__(self) -> int:
        return sum(1 for _ in self)


def error_text(trial: Any) -> str:
    """The last lines of a failed trial's error (Ray writes the traceback to ``error.txt``)."""
    path = getattr(trial, "error_file", None)
    if path:
        try:
            with open(path) as f:
                lines = [ln for ln in f.read().strip().splitlines() if ln.strip()]
            return lines[-1] if lines else "trial failed"
        except OSError:
            pass
    return "trial failed"
