"""MLflow tracking: one parent run per experiment, one nested run per trial.

:class:`MlflowTracker` is a driver-side Ray Tune callback. It writes with ``MlflowClient`` (no
global active-run state), one ``log_batch`` request per trial result rather than one request
per metric, ends every run (FINISHED or FAILED with the reason), and never stops the search
when the tracking server is unreachable: failed writes are queued and retried in order.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback

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


class MlflowWriter:
    """``MlflowClient`` calls made by a background thread, in order, surviving outages.

    ``call`` only queues (the Ray Tune loop never waits for MLflow); one thread runs the calls
    in order. A failing call stays at the head of the queue and is retried every ``retry_s``
    seconds, so an outage delays writes but loses none and keeps their order. ``flush(timeout)``
    waits until everything queued so far is written.
    """

    def __init__(self, tracking_uri: str, retry_s: float = 5.0) -> None:
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.queue: deque[tuple[str, Callable[[], Any]]] = deque()
        self.retry_s = retry_s
        self.failures = 0
        self._cond = threading.Condition()
        self._busy = False
        self._last_warning = 0.0
        self._thread = threading.Thread(
            target=self._loop, name="paretune-mlflow-writer", daemon=True
        )
        self._thread.start()

    def call(self, what: str, fn: Callable[[], Any]) -> None:
        with self._cond:
            self.queue.append((what, fn))
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self.queue:
                    self._cond.wait()
                what, fn = self.queue[0]
                self._busy = True
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - any client/transport error: retry later
                self.failures += 1
                now = time.monotonic()
                if now - self._last_warning > 30:
                    logger.warning(
                        "MLflow unreachable (%s: %s); %d writes queued", what, exc, len(self.queue)
                    )
                    self._last_warning = now
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
                time.sleep(self.retry_s)
                continue
            with self._cond:
                self.queue.popleft()
                self._busy = False
                self._cond.notify_all()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued call ran; False when ``timeout`` seconds passed first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(timeout=min(left, 1.0))
        return True


class MlflowTracker(Callback):
    """Ray Tune callback that mirrors every trial into a nested MLflow run.

    Args:
        tracking_uri: MLflow tracking URI.
        experiment_id: MLflow experiment id.
        parent_run_id: the experiment's parent run.
        searcher: the search algorithm's name (a tag on each trial run).
        decision_names: names of the architecture decisions (logged as params).
        arch_params: turns a trial config into ``{decision: option}`` params.
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_id: str,
        parent_run_id: str,
        searcher: str,
        arch_params: Callable[[Mapping[str, Any]], dict[str, str]] | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.searcher = searcher
        self.arch_params = arch_params
        self.writer: MlflowWriter | None = None
        self.runs: dict[str, str] = {}
        self.ended: set[str] = set()
        self._reconciled = False
        # What is waiting to be written per trial; one log_batch sends all of it.
        self._pending: dict[str, dict[str, list]] = {}
        self._flush_queued: set[str] = set()
        self._pending_lock = threading.Lock()

    def setup(self, **info: Any) -> None:
        self.writer = MlflowWriter(self.tracking_uri)

    def _reconcile(self) -> None:
        """Learn the trial runs that already exist under the parent run (after a resume).

        Ray's saved callback state can be seconds old; MLflow itself knows every run created
        before the driver died, so a restored trial reuses its run and never gets a duplicate.
        """
        if self._reconciled:
            return
        self._reconciled = True
        try:
            for trial_id, (run_id, status) in existing_trial_runs(
                self._w().client, self.experiment_id, self.parent_run_id
            ).items():
                self.runs[trial_id] = run_id
                if status in ("FINISHED", "FAILED", "KILLED"):
                    self.ended.add(trial_id)
        except Exception as exc:  # noqa: BLE001 - unreachable: keep Ray's saved state
            logger.warning("could not list existing MLflow runs (%s); using the saved state", exc)

    def __getstate__(self) -> dict[str, Any]:
        # Ray pickles the callback with the tuner; the client and its queue stay behind.
        state = dict(self.__dict__)
        state["writer"] = None
        state["_pending"] = {}
        state["_flush_queued"] = set()
        state["_pending_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pending_lock = threading.Lock()

    def get_state(self) -> dict[str, Any]:
        return {"runs": dict(self.runs), "ended": sorted(self.ended)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.runs = dict(state.get("runs", {}))
        self.ended = set(state.get("ended", []))

    def _w(self) -> MlflowWriter:
        if self.writer is None:
            self.writer = MlflowWriter(self.tracking_uri)
        return self.writer

    # ------------------------------------------------------------------ trial events
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._reconcile()
        trial_id = trial.trial_id
        client = self._w().client
        if trial_id in self.ended:
            return  # finished before a restart: replayed from the journal, already complete
        if trial_id in self.runs:
            # A restored trial runs again: reuse its run instead of making a duplicate.
            run_id = self.runs[trial_id]
            self.ended.discard(trial_id)
            self._w().call("update_run", lambda: client.update_run(run_id, status="RUNNING"))
            return
        tags = {
            "mlflow.parentRunId": self.parent_run_id,
            "mlflow.runName": f"trial-{trial_id}",
            "trial_id": trial_id,
            "searcher": self.searcher,
            **meta_tags(trial.config),
        }
        params = self.arch_params(trial.config) if self.arch_params else {}

        attempts = 0

        def create() -> None:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                # A failed attempt may have reached the server (the answer was lost): adopt
                # the run it made instead of making a second one.
                found = client.search_runs(
                    [self.experiment_id],
                    f"tags.mlflow.parentRunId = '{self.parent_run_id}' and tags.trial_id = '{trial_id}'",
                    max_results=1,
                )
                if found:
                    self.runs[trial_id] = found[0].info.run_id
            if trial_id not in self.runs:
                run = client.create_run(
                    self.experiment_id, tags=tags, run_name=tags["mlflow.runName"]
                )
                self.runs[trial_id] = run.info.run_id

        self._w().call("create_run", create)
        if params:  # sent with the trial's first batch of metrics
            self._add(trial_id, queue=False, params=[Param(k, str(v)) for k, v in params.items()])

    def _run_call(self, trial_id: str, what: str, fn: Callable[[str], Any]) -> None:
        """Queue ``fn(run_id)``; the run id is looked up when the call runs (creation may be queued)."""

        def call() -> None:
            run_id = self.runs.get(trial_id)
            if run_id is None:
                raise RuntimeError(f"no MLflow run yet for trial {trial_id}")
            fn(run_id)

        self._w().call(what, call)

    def _add(self, trial_id: str, queue: bool = True, **items: list) -> bool:
        """Buffer metrics/params/tags of a trial; True when a flush must be queued for them.

        Items that arrive while a flush is queued but not yet run go out with it.
        """
        with self._pending_lock:
            buf = self._pending.setdefault(trial_id, {"metrics": [], "params": [], "tags": []})
            for key, values in items.items():
                buf[key].extend(values)
            if not queue or trial_id in self._flush_queued:
                return False
            self._flush_queued.add(trial_id)
            return True

    def _queue_flush(self, trial_id: str) -> None:
        """Queue one ``log_batch`` that sends whatever the trial's buffer holds when it runs."""
        client = self._w().client

        def flush(run_id: str) -> None:
            with self._pending_lock:
                buf = self._pending.pop(trial_id, None)
                self._flush_queued.discard(trial_id)
            if not buf:
                return
            try:
                m, p, t = buf["metrics"], buf["params"], buf["tags"]
                while m or p or t:  # MLflow's limits per call: 1000 metrics, 100 params, 100 tags
                    client.log_batch(run_id, metrics=m[:1000], params=p[:100], tags=t[:100])
                    m, p, t = m[1000:], p[100:], t[100:]
            except Exception:
                with self._pending_lock:  # put it back for the retry, ahead of newer items
                    self._flush_queued.add(trial_id)  # this very call runs again
                    newer = self._pending.pop(trial_id, {"metrics": [], "params": [], "tags": []})
                    self._pending[trial_id] = {
                        k: m_ + newer[k] for k, m_ in (("metrics", m), ("params", p), ("tags", t))
                    }
                raise

        self._run_call(trial_id, "log_batch", flush)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        if trial.trial_id in self.ended:
            return  # finished before a restart: replayed from the journal, already complete
        batch = result_metrics(result)
        if batch and self._add(trial.trial_id, metrics=batch):
            self._queue_flush(trial.trial_id)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, "FINISHED", None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, "FAILED", error_text(trial))

    def _end(self, trial: Any, status: str, error: str | None) -> None:
        trial_id = trial.trial_id
        if trial_id in self.ended:
            return
        self.ended.add(trial_id)
        _, tags = split_result(trial.last_result or {})
        tags["status"] = "failed" if error is not None else "ok"
        if error is not None:
            tags["error"] = error[:MAX_TAG_LENGTH]
        client = self._w().client
        if self._add(trial_id, tags=[RunTag(k, v) for k, v in tags.items()]):
            self._queue_flush(trial_id)
        self._run_call(
            trial_id, "set_terminated", lambda run_id: client.set_terminated(run_id, status=status)
        )

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if not self._w().flush(timeout=120):
            logger.warning(
                "MLflow writes still queued at the end (%d); run `paretune sync-mlflow` later",
                len(self._w().queue),
            )


def existing_trial_runs(
    client: MlflowClient, experiment_id: str, parent_run_id: str
) -> dict[str, tuple[str, str]]:
    """``{trial id: (run id, status)}`` of the nested runs under ``parent_run_id``."""
    out: dict[str, tuple[str, str]] = {}
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
            max_results=1000,
            page_token=token,
        )
        for r in page:
            trial_id = r.data.tags.get("trial_id")
            if trial_id:
                out[trial_id] = (r.info.run_id, r.info.status)
        token = page.token
        if not token:
            return out


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
