"""The writer behind :class:`~paretune.platform.tracking.MlflowTracker`: MLflow calls made away
from the Ray Tune driver loop.

The tracker sends plain data, one message per trial event, and :class:`WriterCore` turns it into
``MlflowClient`` calls: per trial one ``create_run`` (with its tags), one ``log_batch`` for
whatever arrived since the previous one (params, metrics, final tags) and ``set_terminated``.
Everything of a trial that is waiting when its turn comes goes out together, so a trial that is
already over when it is written costs exactly those three calls; on an SQL store (the tracking
URI is the database) such trials are instead inserted whole, a batch per transaction (see
:mod:`paretune.platform.mlflow_sql`: about 0.7 ms of work per trial instead of 19).

By default the writer is its own process (``python -m paretune.platform.mlflow_writer``, started
by the tracker; it never imports Ray): MLflow's SQLAlchemy work then runs beside Ray Tune's
driver loop instead of taking turns with it for the GIL. The same code runs in a thread where
no process can be started.

A failing call is retried every ``retry_s`` seconds and nothing queued is lost or reordered; a
run creation that may have reached the server before it failed adopts the run it made; before
the first write the writer learns the trial runs that already exist under the parent run (a
resumed experiment), so a trial never gets two runs.

Messages to the writer: ``("init", settings)`` (first, process only), ``("start", trial_id,
tags, params, start_ms)``, ``("result", trial_id, [(key, value, timestamp_ms, step), ...])``,
``("end", trial_id, status, tags, end_ms)`` (the times are optional: the writer's clock
otherwise), ``("cells", {trial_id: arch})`` (draw and log ``cell.png`` to those runs),
``("flush", token)``, ``("close",)``. Replies: ``("runs", {trial_id:
run_id}, [ended trial ids])`` (what already existed), ``("run", trial_id, run_id)``, ``("done",
trial_id)`` (everything of an ended trial is written), ``("pictured", [trial ids])``,
``("flushed", token)``, ``("warning",
text)``.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from paretune.platform.mlflow_sql import MAX_METRICS, MAX_PARAMS, MAX_TAGS

Emit = Callable[[tuple], None]

# Writes wait for up to BATCH_N trials or BATCH_S seconds (see WriterCore).
BATCH_S, BATCH_N = 2.0, 32
# A released writer process exits after this many seconds without a new session.
IDLE_EXIT_S = 600.0
# A writer whose tracker is gone stops retrying failed writes after this many seconds.
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


# ---------------------------------------------------------------------- SQLite commits
_FAST_COMMIT_FILES: set[str] = set()
_fast_commit_lock = threading.Lock()
_listening = False


def sqlite_fast_commits(tracking_uri: str) -> None:
    """``PRAGMA synchronous=NORMAL`` for this process's MLflow connections to a WAL-mode SQLite store.

    In WAL mode a commit then appends to the log without waiting for the disk (``fsync``); the
    log is synced at checkpoints. The database stays consistent whatever happens; a power loss
    (not a crash of the program) can undo the last commits, which ``paretune sync-mlflow``
    rewrites. Only connections to this file in WAL mode are touched (a SQLAlchemy pool event).
    """
    if not tracking_uri.startswith("sqlite:///"):
        return
    global _listening
    path = os.path.realpath(os.path.expanduser(tracking_uri.removeprefix("sqlite:///")))
    with _fast_commit_lock:
        _FAST_COMMIT_FILES.add(path)
        if _listening:
            return
        from sqlalchemy import event
        from sqlalchemy.pool import Pool

        # On checkout, not connect: connections already in a pool get it too.
        event.listen(Pool, "checkout", _synchronous_normal)
        _listening = True


def _synchronous_normal(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    info = record.info
    if "paretune.synchronous" in info or not isinstance(dbapi_connection, sqlite3.Connection):
        return
    try:
        path = info.get("paretune.database")
        if path is None:
            rows = dbapi_connection.execute("PRAGMA database_list").fetchall()
            main = [row[2] for row in rows if row[1] == "main" and row[2]]
            path = info["paretune.database"] = os.path.realpath(main[0]) if main else ""
        if path not in _FAST_COMMIT_FILES:
            return
        # Not in rollback-journal mode: FULL is needed there. A connection opened before the
        # file went to WAL mode says so after its next transaction: asked again next time.
        (mode,) = dbapi_connection.execute("PRAGMA journal_mode").fetchone()
        if str(mode).lower() == "wal":
            dbapi_connection.execute("PRAGMA synchronous=NORMAL")
            info["paretune.synchronous"] = "NORMAL"
    except sqlite3.Error:
        pass


# ---------------------------------------------------------------------- the writer
@contextmanager
def _session_lock(parent_run_id: str, timeout: float = 120.0) -> Iterator[None]:
    """One writer at a time per parent run, on this machine.

    A writer whose driver died finishes what it had queued (see :func:`main`); a writer for the
    resumed search waits for it before it lists the existing runs, so a trial never gets two.
    The lock file is removed when the lock is let go.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    folder = os.path.join(tempfile.gettempdir(), "paretune-mlflow-writers")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{parent_run_id}.lock")
    deadline = time.monotonic() + timeout
    while True:
        f = open(path, "a")  # held until the session ends
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            if time.monotonic() > deadline:
                yield  # a stuck writer elsewhere: go on rather than stop tracking
                return
            time.sleep(0.1)
            continue
        try:
            same = os.stat(path).st_ino == os.fstat(f.fileno()).st_ino
        except OSError:
            same = False
        if same:
            break
        f.close()  # locked a file its holder had removed: take the current one
    try:
        yield
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
        f.close()


class _Work:
    """What is waiting to be written for one trial."""

    __slots__ = ("start", "params", "metrics", "tags", "end", "start_ms", "end_ms")

    def __init__(self) -> None:
        self.start: dict[str, str] | None = None  # tags for the run's creation
        self.params: dict[str, str] = {}
        self.metrics: list[tuple[str, float, int, int]] = []
        self.tags: dict[str, str] = {}
        self.end: str | None = None  # the final status
        self.start_ms: int | None = None  # when the trial started and ended (the driver's clock)
        self.end_ms: int | None = None

    def then(self, newer: _Work | None) -> _Work:
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
    """Turns trial events into ``MlflowClient`` calls, in order, surviving outages.

    ``submit`` only queues (any thread); ``run`` writes until ``("close",)`` and an empty queue.

    Writes go out in batches: once there is work, the writer waits until ``batch_n`` trials have
    some or ``batch_s`` seconds passed (a flush or close ends the wait), then writes until the
    queue is empty. Back to back, MLflow's SQLAlchemy code runs with warm caches: about 26 ms of
    CPU per trial instead of about 42 ms one trial at a time, measured in a 2-core search.

    Args:
        settings: ``tracking_uri``, ``experiment_id``, ``parent_run_id``, ``runs`` (``{trial id:
            run id}`` known so far), ``ended`` (trials whose runs are complete), ``retry_s``,
            ``batch_s``, ``batch_n`` and ``sql_insert`` (False: no whole-run inserts).
        emit: sends a reply to the tracker.
    """

    def __init__(self, settings: dict[str, Any], emit: Emit) -> None:
        self.tracking_uri: str = settings["tracking_uri"]
        self.experiment_id: str = settings["experiment_id"]
        self.parent_run_id: str = settings["parent_run_id"]
        self.runs: dict[str, str] = dict(settings.get("runs") or {})
        self.ended: set[str] = set(settings.get("ended") or ())
        self.retry_s: float = float(settings.get("retry_s", 5.0))
        self.batch_s: float = float(settings.get("batch_s", BATCH_S))
        self.batch_n: int = int(settings.get("batch_n", BATCH_N))
        self.emit = emit
        self.failures = 0
        self.inserted = 0  # runs written whole (mlflow_sql)
        self._client: Any = None
        # The store for whole-run inserts (mlflow_sql): None until known, False for none.
        self._sql: Any = None if settings.get("sql_insert", True) else False
        self._created: set[str] = set()  # creation attempted: look for the run before another
        self._cond = threading.Condition()
        self._work: dict[str, _Work] = {}
        self._order: deque[Any] = deque()  # trial ids with work, ("flush", token) markers
        self._queued: set[str] = set()
        self._flushes = 0  # flush markers queued
        self._draining = False  # writing a batch: no waiting until the queue is empty
        self._closing = False
        self._last_warning = 0.0
        # When set (the tracker is gone), writes that still fail at this time are given up.
        self.give_up_at: float | None = None
        self.finished = False

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            sqlite_fast_commits(self.tracking_uri)
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    # ------------------------------------------------------------------ queue
    def submit(self, op: tuple) -> None:
        kind = op[0]
        with self._cond:
            if kind in ("flush", "cells"):  # markers: after everything queued before them
                self._order.append(op)
                self._flushes += 1
            elif kind == "close":
                self._closing = True
            else:
                trial_id = op[1]
                work = self._work.get(trial_id)
                if work is None:
                    work = self._work[trial_id] = _Work()
                if kind == "start":
                    if work.start is None:
                        work.start = op[2]
                        work.start_ms = op[4] if len(op) > 4 else None
                    work.params.update(op[3])
                elif kind == "result":
                    work.metrics.extend(op[2])
                elif kind == "end":
                    work.end = op[2]
                    work.tags.update(op[3])
                    work.end_ms = op[4] if len(op) > 4 else None
                else:
                    raise ValueError(f"unknown message {kind!r}")
                if trial_id not in self._queued:
                    self._queued.add(trial_id)
                    self._order.append(trial_id)
            self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return len(self._order)

    # ------------------------------------------------------------------ writing
    def run(self) -> None:
        try:
            with _session_lock(self.parent_run_id):
                self._reconcile()
                if self._sql is None:
                    self._sql = self._find_sql_store()
                self._run()
        finally:
            self.finished = True

    def _find_sql_store(self) -> Any:
        from paretune.platform.mlflow_sql import sql_store

        try:
            return sql_store(self.client) or False
        except Exception:  # noqa: BLE001 - unreachable for now: the client calls retry
            return False

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
                elif isinstance(head, tuple):  # a marker: everything before it is written
                    self._order.popleft()
                    self._flushes -= 1
                    self._draining = bool(self._order)
                else:
                    work = self._work.pop(head)
            if finished:
                self._insert_finished(finished)
                continue
            if work is None:
                if head[0] == "cells":
                    self._log_cells(head[1])
                else:
                    self.emit(("flushed", head[1]))
                continue
            try:
                self._write(head, work)
            except Exception as exc:  # noqa: BLE001 - any client/transport error: retry later
                self.failures += 1
                with self._cond:  # put it back, ahead of what arrived meanwhile
                    self._work[head] = work.then(self._work.get(head))
                now = time.monotonic()
                if now - self._last_warning > 30:
                    self._last_warning = now
                    self.emit(
                        (
                            "warning",
                            f"MLflow unreachable ({type(exc).__name__}: {exc}); "
                            f"{self.pending()} trials' writes queued",
                        )
                    )
                if self.give_up_at is not None and time.monotonic() > self.give_up_at:
                    return
                time.sleep(self.retry_s)
                continue
            with self._cond:
                if head not in self._work:  # nothing new for it arrived while writing
                    self._order.popleft()
                    self._queued.discard(head)
                    self._draining = bool(self._order)

    def _log_cells(self, archs: dict[str, str]) -> None:
        """Draw ``cell.png`` for trials (``{trial id: arch}``) and log it to their runs.

        Replies ``("pictured", [trial ids])``; a trial left out (no run, an unreadable
        architecture, a failed upload) is the driver's to picture.
        """
        from paretune.platform import artifacts

        run_archs = {self.runs[t]: a for t, a in archs.items() if t in self.runs}
        try:
            drawn = artifacts.draw_cell_pictures(run_archs.values())
            run_archs = {r: a for r, a in run_archs.items() if a in drawn}
            artifacts.log_cell_pictures(self.client, run_archs, drawn=drawn)
        except Exception as exc:  # noqa: BLE001 - the driver logs them instead
            self.emit(("warning", f"the MLflow writer could not log cell pictures ({exc})"))
            return
        self.emit(("pictured", [t for t in archs if self.runs.get(t) in run_archs]))

    def _take_finished(self) -> list[tuple[str, _Work]]:
        """From the head of the queue (lock held): trials over before any write, for one insert.

        Empty where the store is not one :mod:`paretune.platform.mlflow_sql` writes to.
        """
        out: list[tuple[str, _Work]] = []
        if not self._sql:
            return out
        while self._order and len(out) < self.batch_n:
            trial_id = self._order[0]
            if isinstance(trial_id, tuple):
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

    def _insert_finished(self, finished: list[tuple[str, _Work]]) -> None:
        """Write whole finished runs in one transaction (see :mod:`paretune.platform.mlflow_sql`).

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
                metrics=work.metrics,
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
            self.emit(("run", trial_id, run_id))
            self.emit(("done", trial_id))
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
        while len(self._order) < self.batch_n and not self._closing and not self._flushes:
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
            self.emit(
                ("warning", f"could not list existing MLflow runs ({exc}); using the saved state")
            )
            return
        ended = []
        for trial_id, (run_id, status) in found.items():
            self.runs[trial_id] = run_id
            if status in ("FINISHED", "FAILED", "KILLED"):
                self.ended.add(trial_id)
                ended.append(trial_id)
        if found:
            self.emit(("runs", {t: r for t, (r, _) in found.items()}, ended))

    def _write(self, trial_id: str, work: _Work) -> None:
        """Write ``work``; what is written is removed from it, so a retry resumes after it."""
        if trial_id in self.ended:
            # Complete before a restart (replayed from the journal) or already ended.
            self.emit(("done", trial_id))
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
                self.emit(("run", trial_id, run_id))
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
            self.emit(("done", trial_id))

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
def main(argv: list[str] | None = None) -> None:
    """``python -m paretune.platform.mlflow_writer OPS_FD REPLIES_FD``: the writer process.

    Serves one tracker at a time: ``("init", settings)`` starts a session, ``("release",)`` ends
    it once everything is written (the process then waits for the next ``init``: a driver that
    runs several searches starts MLflow, about 3 s of CPU, once), ``("close",)`` ends it and
    exits. When the tracker's side of the pipe closes without that (the driver died), the
    writes already queued are still made, for up to ``ORPHAN_GRACE_S`` seconds of failures,
    then the process exits; it runs in a session of its own, so that a kill of the driver's
    process group leaves it that time. Ctrl-C is the driver's to handle.
    """
    import queue
    import signal
    from multiprocessing.connection import Connection

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ops_fd, replies_fd = (int(a) for a in (argv or sys.argv[1:]))
    ops = Connection(ops_fd, writable=False)
    replies = Connection(replies_fd, readable=False)
    closing = threading.Event()

    def emit(message: tuple) -> None:
        if closing.is_set():
            return  # nobody reads the replies any more
        try:
            replies.send(message)
        except OSError:
            os._exit(0)

    sessions: queue.Queue[WriterCore | None] = queue.Queue()

    def read() -> None:
        # Runs before MLflow is imported (seconds): the tracker never waits for the pipe.
        core: WriterCore | None = None  # the session that messages go to
        last: WriterCore | None = None  # the latest session, maybe still writing
        while True:
            try:
                op = ops.recv()
            except (EOFError, OSError):
                if last is None or last.finished:
                    os._exit(0)
                closing.set()  # nobody to reply to: write what is queued, then exit
                last.give_up_at = time.monotonic() + ORPHAN_GRACE_S
                last.submit(("close",))
                sessions.put(None)
                return
            kind = op[0]
            if kind == "init":
                core = last = WriterCore(op[1], emit)
                sessions.put(core)
            elif kind in ("release", "close"):
                if kind == "close":
                    closing.set()
                    sessions.put(None)
                if core is not None:
                    core.submit(("close",))
                core = None
            elif core is not None:
                core.submit(op)

    threading.Thread(target=read, name="paretune-mlflow-reader", daemon=True).start()
    while True:
        try:
            core = sessions.get(timeout=IDLE_EXIT_S)
        except queue.Empty:
            os._exit(0)  # released and not needed again for a while
        if core is None:
            os._exit(0)
        core.run()


if __name__ == "__main__":
    main()
