"""The writer behind :class:`~paretune.platform.tracking.MlflowTracker`: MLflow calls made away
from the Ray Tune driver loop.

The tracker sends typed messages (:mod:`paretune.platform.writer_messages`), one per trial
event, and :class:`WriterCore` turns them into public ``MlflowClient`` calls: per trial one
``create_run`` (with its tags), one ``log_batch`` for whatever arrived since the previous one
and ``set_terminated``, in batches (see :class:`WriterCore`). By default the writer is its own
process (``python -m paretune.platform.mlflow_writer``; it never imports Ray), so MLflow's
SQLAlchemy work runs beside Ray Tune's driver loop instead of taking turns with it for the GIL;
the same code runs in a thread where no process can be started.

A failing call is retried every ``retry_s`` seconds and nothing queued is lost or reordered (an
outage only delays the writes); each kind of failure is reported once, in one line with the
``paretune sync-mlflow`` hint, never with a traceback. A creation that may have reached the
server before it failed adopts the run it made; before the first write the writer learns the
trial runs that already exist under the parent run (a resume), so a trial never gets two. A
store whose experiment or parent run is gone is reported as a ``StoreProblem``. Whole-run SQL
inserts (:mod:`paretune.platform.mlflow_sql`) are an opt-in, ``PARETUNE_MLFLOW_SQL_INSERT=1``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from paretune.platform.redact import redact_uri
from paretune.platform.writer_messages import (
    MAX_METRICS,
    MAX_PARAMS,
    MAX_TAGS,
    Cells,
    Close,
    End,
    Flush,
    Flushed,
    Init,
    Message,
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
    failure_kind,
    is_store_lost,
    short_reason,
    sync_hint,
)

Emit = Callable[[Reply], None]

# A writer whose tracker closed it (or is gone) stops retrying failed writes after this long.
ORPHAN_GRACE_S = 60.0


def existing_trial_runs(
    client: Any, experiment_id: str, parent_run_id: str
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


# ---------------------------------------------------------------------- the writer
LOCK_FILE = "mlflow-writer.lock"  # in the experiment folder


@contextmanager
def session_lock(experiment_dir: str | None, timeout: float = 120.0) -> Iterator[None]:
    """One writer at a time per experiment (a lock file in its folder, kept there).

    A writer whose driver died finishes what it had queued (see :func:`main`); the writer of
    the resumed search waits for it before it lists the existing runs, so a trial never gets
    two. Without a folder (or a lock), the writer goes on without waiting.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX
        fcntl = None
    if fcntl is None or experiment_dir is None or not os.path.isdir(experiment_dir):
        yield
        return
    with open(os.path.join(experiment_dir, LOCK_FILE), "a") as f:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline:
                    break  # a stuck writer elsewhere: go on rather than stop tracking
                time.sleep(0.1)
        yield  # the lock goes with the file's closing


@dataclass
class TrialWork:
    """What is waiting to be written for one trial."""

    start: dict[str, str] | None = None  # tags for the run's creation
    params: dict[str, str] = field(default_factory=dict)
    metrics: list[MetricPoint] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    end: str | None = None  # the final status
    start_ms: int | None = None  # when the trial started and ended (the driver's clock)
    end_ms: int | None = None

    def add(self, message: TrialMessage) -> None:
        if isinstance(message, Start):
            if self.start is None:
                self.start = message.tags
                self.start_ms = message.start_ms
            self.params.update(message.params)
        elif isinstance(message, Result):
            self.metrics.extend(message.metrics)
        else:
            self.end = message.status
            self.tags.update(message.tags)
            self.end_ms = message.end_ms

    def then(self, newer: TrialWork | None) -> TrialWork:
        """This (older, unwritten) work followed by ``newer``."""
        if newer is not None:
            if self.start is None:
                self.start = newer.start
                self.start_ms = newer.start_ms
            self.params.update(newer.params)
            self.metrics.extend(newer.metrics)
            self.tags.update(newer.tags)
            self.end = newer.end or self.end
            self.end_ms = newer.end_ms or self.end_ms
        return self


class WriterCore:
    """Turns trial messages into ``MlflowClient`` calls, in order, surviving outages.

    ``submit`` only queues (any thread); ``run`` writes until :class:`Close` and an empty queue.

    Writes go out in batches: once there is work, the writer waits until ``batch_n`` trials have
    some or ``batch_s`` seconds passed (a flush or close ends the wait), then writes until the
    queue is empty. Back to back, MLflow's SQLAlchemy code runs with warm caches.
    """

    def __init__(self, settings: WriterSettings, emit: Emit) -> None:
        self.settings = settings
        self.tracking_uri = settings.tracking_uri
        self.experiment_id = settings.experiment_id
        self.parent_run_id = settings.parent_run_id
        self.runs: dict[str, str] = dict(settings.runs)
        self.ended: set[str] = set(settings.ended)
        self.retry_s = float(settings.retry_s)
        self.batch_s = float(settings.batch_s)
        self.batch_n = int(settings.batch_n)
        self.emit = emit
        self.failures = 0
        self.inserted = 0  # runs written whole (mlflow_sql, opt-in)
        self._client: Any = None
        # The store for whole-run inserts (mlflow_sql): None until known, False for none.
        self._sql: Any = None if settings.sql_insert else False
        self._created: set[str] = set()  # creation attempted: look for the run before another
        self._cond = threading.Condition()
        self._work: dict[str, TrialWork] = {}
        self._order: deque[str | Cells | Flush] = deque()  # trial ids with work, and markers
        self._queued: set[str] = set()
        self._markers = 0  # Flush/Cells markers queued
        self._draining = False  # writing a batch: no waiting until the queue is empty
        self._closing = False
        self._warned: set[str] = set()  # kinds of failure reported
        self._store_lost = False
        # When set (the tracker closed or is gone), writes that still fail then are given up.
        self.give_up_at: float | None = None
        self.finished = False

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def warn_once(self, kind: str, text: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            self.emit(WriterWarning(text))

    # ------------------------------------------------------------------ queue
    def submit(self, message: Message) -> None:
        with self._cond:
            if isinstance(message, Flush | Cells):  # after everything queued before them
                self._order.append(message)
                self._markers += 1
            elif isinstance(message, Close):
                self._closing = True
            elif isinstance(message, Start | Result | End):
                trial_id = message.trial_id
                work = self._work.get(trial_id)
                if work is None:
                    work = self._work[trial_id] = TrialWork()
                work.add(message)
                if trial_id not in self._queued:
                    self._queued.add(trial_id)
                    self._order.append(trial_id)
            else:
                raise TypeError(f"not a writer message: {message!r}")
            self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return len(self._order)

    # ------------------------------------------------------------------ writing
    def run(self) -> None:
        try:
            with session_lock(self.settings.experiment_dir):
                self._reconcile()
                if self._sql is None:
                    self._sql = self._find_sql_store()
                self._run()
        finally:
            self.finished = True

    def _find_sql_store(self) -> Any:
        """The store for the opt-in whole-run inserts, or False (with one warning why not)."""
        from paretune.platform import mlflow_sql

        try:
            store, reason = mlflow_sql.tested_sql_store(self.client)
        except Exception as exc:  # noqa: BLE001 - unreachable for now: the client calls retry
            store, reason = None, short_reason(exc, self.tracking_uri)
        if store is None:
            self.warn_once(
                "sql_insert",
                f"PARETUNE_MLFLOW_SQL_INSERT=1 ignored ({reason}); trial runs are written "
                "through MlflowClient",
            )
            return False
        return store

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._order:
                    if self._closing:
                        return
                    self._cond.wait()
                self._gather()
                head = self._order[0]
                finished = self._take_finished()
                work = None
                if finished:
                    pass
                elif not isinstance(head, str):  # a marker: everything before it is written
                    self._order.popleft()
                    self._markers -= 1
                    self._draining = bool(self._order)
                else:
                    work = self._work.pop(head)
            if finished:
                self._insert_finished(finished)
                continue
            if isinstance(head, Cells):
                self._log_cells(head.archs)
                continue
            if isinstance(head, Flush):
                self.emit(Flushed(head.token))
                continue
            assert isinstance(head, str) and work is not None
            try:
                self._write(head, work)
            except Exception as exc:  # noqa: BLE001 - any client/transport error: retry later
                self.failures += 1
                with self._cond:  # put it back, ahead of what arrived meanwhile
                    self._work[head] = work.then(self._work.get(head))
                self._report_failure(exc)
                if self.give_up_at is not None and time.monotonic() > self.give_up_at:
                    return
                time.sleep(self.retry_s)
                continue
            with self._cond:
                if head not in self._work:  # nothing new for it arrived while writing
                    self._order.popleft()
                    self._queued.discard(head)
                    self._draining = bool(self._order)

    def _report_failure(self, exc: Exception) -> None:
        """One line per kind of failure, never a traceback (SQLAlchemy's run to pages)."""
        hint = sync_hint(self.settings.experiment_dir)
        if is_store_lost(exc) and not self._store_lost:
            self._store_lost = True
            self.emit(
                StoreProblem(
                    f"the MLflow store {redact_uri(self.tracking_uri)} no longer has this "
                    f"search's experiment or parent run ({short_reason(exc, self.tracking_uri)})"
                )
            )
        self.warn_once(
            failure_kind(exc),
            f"MLflow writes failing ({type(exc).__name__}: "
            f"{short_reason(exc, self.tracking_uri)}); {self.pending()} trials' writes queued "
            f"and retried every {self.retry_s:g} s; if they do not get through, {hint}",
        )

    def _log_cells(self, archs: dict[str, str]) -> None:
        """Draw ``cell.png`` for trials (``{trial id: arch}``) and log it to their runs.

        Replies :class:`Pictured`; a trial left out (no run, an unreadable architecture, a
        failed upload) is the driver's to picture.
        """
        from paretune.platform import artifacts

        run_archs = {self.runs[t]: a for t, a in archs.items() if t in self.runs}
        try:
            drawn = artifacts.draw_cell_pictures(run_archs.values())
            run_archs = {r: a for r, a in run_archs.items() if a in drawn}
            artifacts.log_cell_pictures(self.client, run_archs, drawn=drawn)
        except Exception as exc:  # noqa: BLE001 - the driver logs them instead
            reason = short_reason(exc, self.tracking_uri)
            self.warn_once("cells", f"the MLflow writer could not log cell pictures ({reason})")
            return
        self.emit(Pictured([t for t in archs if self.runs.get(t) in run_archs]))

    def _take_finished(self) -> list[tuple[str, TrialWork]]:
        """From the head of the queue (lock held): trials over before any write, for one insert.

        Empty unless the opt-in whole-run inserts (mlflow_sql) are on and accepted.
        """
        out: list[tuple[str, TrialWork]] = []
        if not self._sql:
            return out
        while self._order and len(out) < self.batch_n:
            trial_id = self._order[0]
            if not isinstance(trial_id, str):
                break
            work = self._work[trial_id]
            if (
                work.start is None
                or work.end is None
                or trial_id in self.runs
                or trial_id in self.ended
                or trial_id in self._created
            ):
                break
            self._order.popleft()
            self._queued.discard(trial_id)
            out.append((trial_id, self._work.pop(trial_id)))
        if out:
            self._draining = bool(self._order)
        return out

    def _insert_finished(self, finished: list[tuple[str, TrialWork]]) -> None:
        """Write whole finished runs in one transaction (opt-in, :mod:`mlflow_sql`).

        A run that does not pass MLflow's validation, or a batch whose transaction fails, goes
        back to the head of the queue for the client calls, which retry and report as usual
        (and adopt a run that a failed commit made after all: marked as attempted here).
        """
        from paretune.platform import mlflow_sql

        runs: dict[str, mlflow_sql.FinishedRun] = {}
        now = int(time.time() * 1000)
        for trial_id, work in finished:
            run = mlflow_sql.FinishedRun(
                tags=self._creation_tags(trial_id, {**(work.start or {}), **work.tags}),
                params=work.params,
                metrics=list(work.metrics),
                status=work.end or "FINISHED",
                start_ms=work.start_ms or now,
                end_ms=work.end_ms or now,
            )
            try:
                if run.fits_one_batch():
                    runs[trial_id] = mlflow_sql.validate(run)
            except Exception:  # noqa: BLE001 - left to the client calls, whose errors say why
                pass
        made: dict[str, str] = {}
        if runs:
            self._created.update(runs)
            try:
                made = mlflow_sql.insert_finished_runs(self._sql, self.experiment_id, runs)
            except Exception:  # noqa: BLE001 - the client calls retry and warn
                made = {}
        self.inserted += len(made)
        for trial_id, run_id in made.items():
            self.runs[trial_id] = run_id
            self.ended.add(trial_id)
            self.emit(RunMade(trial_id, run_id))
            self.emit(TrialWritten(trial_id))
        back = [(t, w) for t, w in finished if t not in made]
        if back:
            with self._cond:
                for trial_id, work in reversed(back):
                    self._work[trial_id] = work.then(self._work.get(trial_id))
                    if trial_id not in self._queued:
                        self._queued.add(trial_id)
                        self._order.appendleft(trial_id)
                self._draining = True

    def _gather(self) -> None:
        """Wait (holding the lock, work queued) until a batch is due; see the class doc."""
        if self._draining:
            return
        deadline = time.monotonic() + self.batch_s
        while len(self._order) < self.batch_n and not self._closing and not self._markers:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._cond.wait(left)
        self._draining = True

    def _reconcile(self) -> None:
        """Learn the trial runs that already exist under the parent run (after a resume).

        Ray's saved callback state can be seconds old; MLflow itself knows every run created
        before the driver died, so a restored trial reuses its run and never gets a duplicate.
        """
        try:
            found = existing_trial_runs(self.client, self.experiment_id, self.parent_run_id)
        except Exception as exc:  # noqa: BLE001 - unreachable: keep the saved state
            reason = short_reason(exc, self.tracking_uri)
            self.warn_once(
                "reconcile",
                f"could not list existing MLflow runs ({reason}); using the saved state",
            )
            return
        ended = []
        for trial_id, (run_id, status) in found.items():
            self.runs[trial_id] = run_id
            if status in ("FINISHED", "FAILED", "KILLED"):
                self.ended.add(trial_id)
                ended.append(trial_id)
        if found:
            self.emit(RunsFound({t: r for t, (r, _) in found.items()}, ended))

    def _write(self, trial_id: str, work: TrialWork) -> None:
        """Write ``work``; what is written is removed from it, so a retry resumes after it."""
        if trial_id in self.ended:
            # Complete before a restart (replayed from the journal) or already ended.
            self.emit(TrialWritten(trial_id))
            return
        client = self.client
        run_id = self.runs.get(trial_id)
        if work.start is not None or run_id is None:
            if run_id is None:
                # The final tags of a trial that is already over go out with the creation.
                tags = {**(work.start or {}), **work.tags}
                run_id = self._create(trial_id, tags, work.start_ms)
                work.tags = {}
                self.runs[trial_id] = run_id
                self.emit(RunMade(trial_id, run_id))
            elif work.end is None:
                # A restored trial runs again: reuse its run instead of making a duplicate.
                client.update_run(run_id, status="RUNNING")
            work.start = None
        from mlflow.entities import Metric, Param, RunTag

        while work.metrics or work.params or work.tags:
            params = list(work.params.items())[:MAX_PARAMS]
            tags = list(work.tags.items())[:MAX_TAGS]
            client.log_batch(
                run_id,
                metrics=[Metric(*m) for m in work.metrics[:MAX_METRICS]],
                params=[Param(k, v) for k, v in params],
                tags=[RunTag(k, v) for k, v in tags],
            )
            del work.metrics[:MAX_METRICS]
            for k, _ in params:
                del work.params[k]
            for k, _ in tags:
                del work.tags[k]
        if work.end is not None:
            client.set_terminated(run_id, status=work.end, end_time=work.end_ms)
            work.end = None
            self.ended.add(trial_id)
            self.emit(TrialWritten(trial_id))

    def _creation_tags(self, trial_id: str, tags: dict[str, str]) -> dict[str, str]:
        return {
            **tags,
            "mlflow.parentRunId": self.parent_run_id,
            "mlflow.runName": f"trial-{trial_id}",
            "trial_id": trial_id,
        }

    def _create(self, trial_id: str, extra_tags: dict[str, str], start_ms: int | None) -> str:
        if trial_id in self._created:
            # An earlier attempt may have reached the server (the answer was lost): adopt the
            # run it made (with all its tags: a creation is one transaction) instead of a second.
            found = self.client.search_runs(
                [self.experiment_id],
                f"tags.mlflow.parentRunId = '{self.parent_run_id}' and tags.trial_id = '{trial_id}'",
                max_results=1,
            )
            if found:
                return found[0].info.run_id
        self._created.add(trial_id)
        tags = self._creation_tags(trial_id, extra_tags)
        run = self.client.create_run(
            self.experiment_id, start_time=start_ms, tags=tags, run_name=tags["mlflow.runName"]
        )
        return run.info.run_id


# ---------------------------------------------------------------------- process entry point
def quiet_library_logs() -> None:
    """In the writer process: MLflow's and SQLAlchemy's own log records (tracebacks, retries)
    are not printed; the writer reports each kind of failure once itself."""
    for name in ("sqlalchemy", "alembic", "mlflow", "urllib3"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def main(argv: list[str] | None = None) -> None:
    """``python -m paretune.platform.mlflow_writer OPS_FD REPLIES_FD``: the writer process.

    Serves one tracker: :class:`Init` starts the session, :class:`Close` (or the tracker's side
    of the pipe closing: the driver died) makes it write what is queued, for up to
    ``ORPHAN_GRACE_S`` seconds of failures, then exit. It runs in a session of its own, so that
    a kill of the driver's process group leaves it that time. Ctrl-C is the driver's to handle.
    """
    import signal
    from multiprocessing.connection import Connection

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    quiet_library_logs()
    ops_fd, replies_fd = (int(a) for a in (argv or sys.argv[1:]))
    ops = Connection(ops_fd, writable=False)
    replies = Connection(replies_fd, readable=False)
    orphaned = threading.Event()

    def emit(message: Reply) -> None:
        if orphaned.is_set():
            return  # nobody reads the replies any more
        try:
            replies.send(message)
        except OSError:
            orphaned.set()

    first = ops.recv()
    if not isinstance(first, Init):
        raise SystemExit(f"mlflow_writer: expected Init, got {type(first).__name__}")
    core = WriterCore(first.settings, emit)

    def read() -> None:
        # Reads while MLflow is imported and the store opened (seconds): the tracker never
        # waits for the pipe.
        while True:
            try:
                message = ops.recv()
            except (EOFError, OSError):
                orphaned.set()  # nobody to reply to: write what is queued, then exit
                message = Close()
            if isinstance(message, Close):
                core.give_up_at = time.monotonic() + ORPHAN_GRACE_S
                core.submit(message)
                return
            core.submit(message)

    threading.Thread(target=read, name="paretune-mlflow-reader", daemon=True).start()
    core.run()
    os._exit(0)


if __name__ == "__main__":
    main()
