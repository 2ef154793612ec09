"""The writer behind :class:`~paretune.platform.tracking.MlflowTracker`: MLflow calls made away
from the Ray Tune driver loop.

The tracker sends plain data, one message per trial event, and :class:`WriterCore` turns it into
``MlflowClient`` calls: per trial one ``create_run`` (with its tags), one ``log_batch`` for
whatever arrived since the previous one (params, metrics, final tags) and ``set_terminated``.
Everything of a trial that is waiting when its turn comes goes out together, so a trial that is
already over when it is written costs exactly those three calls.

By default the writer is its own process (``python -m paretune.platform.mlflow_writer``, started
by the tracker; it never imports Ray): a SQLite store costs 15-25 ms of SQLAlchemy work per
trial, which then runs beside Ray Tune's driver loop instead of taking turns with it for the
GIL. The same code runs in a thread where no process can be started.

A failing call is retried every ``retry_s`` seconds and nothing queued is lost or reordered; a
run creation that may have reached the server before it failed adopts the run it made; before
the first write the writer learns the trial runs that already exist under the parent run (a
resumed experiment), so a trial never gets two runs.

Messages to the writer: ``("init", settings)`` (first, process only), ``("start", trial_id,
tags, params)``, ``("result", trial_id, [(key, value, timestamp_ms, step), ...])``, ``("end",
trial_id, status, tags)``, ``("flush", token)``, ``("close",)``. Replies: ``("runs", {trial_id:
run_id}, [ended trial ids])`` (what already existed), ``("run", trial_id, run_id)``, ``("done",
trial_id)`` (everything of an ended trial is written), ``("flushed", token)``, ``("warning",
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

Emit = Callable[[tuple], None]

# MLflow's limits per log_batch call.
MAX_METRICS, MAX_PARAMS, MAX_TAGS = 1000, 100, 100
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

    __slots__ = ("start", "params", "metrics", "tags", "end")

    def __init__(self) -> None:
        self.start: dict[str, str] | None = None  # tags for the run's creation
        self.params: dict[str, str] = {}
        self.metrics: list[tuple[str, float, int, int]] = []
        self.tags: dict[str, str] = {}
        self.end: str | None = None  # the final status

    def then(self, newer: _Work | None) -> _Work:
        """This (older, unwritten) work followed by ``newer``."""
        if newer is not None:
            if self.start is None:
                self.start = newer.start
            self.params.update(newer.params)
            self.metrics.extend(newer.metrics)
            self.tags.update(newer.tags)
            self.end = newer.end or self.end
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
            ``batch_s`` and ``batch_n``.
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
        self._client: Any = None
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
            if kind == "flush":
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
                    work.params.update(op[3])
                elif kind == "result":
                    work.metrics.extend(op[2])
                elif kind == "end":
                    work.end = op[2]
                    work.tags.update(op[3])
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
                self._run()
        finally:
            self.finished = True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._order:
                    if self._closing:
                        return
                    self._cond.wait()
                self._gather()
                head = self._order[0]
                if isinstance(head, tuple):  # a flush marker: everything before it is written
                    self._order.popleft()
                    self._flushes -= 1
                    self._draining = bool(self._order)
                    work = None
                else:
                    work = self._work.pop(head)
            if work is None:
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
                run_id = self._create(trial_id, tags)
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
            client.set_terminated(run_id, status=work.end)
            work.end = None
            self.ended.add(trial_id)
            self.emit(("done", trial_id))

    def _create(self, trial_id: str, extra_tags: dict[str, str]) -> str:
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
        tags = {
            **extra_tags,
            "mlflow.parentRunId": self.parent_run_id,
            "mlflow.runName": f"trial-{trial_id}",
            "trial_id": trial_id,
        }
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=tags["mlflow.runName"])
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
