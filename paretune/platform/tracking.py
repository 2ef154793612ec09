"""MLflow tracking: one parent run per experiment, one nested run per trial.

:class:`MlflowTracker` is a driver-side Ray Tune callback. It hands each trial event, as plain
data, to a writer (:mod:`paretune.platform.mlflow_writer`) that runs in its own process, so
MLflow's work runs beside Ray Tune's driver loop instead of under its GIL. The writer uses
``MlflowClient`` (no global active-run state): per trial one ``create_run``, one ``log_batch``
per batch of results rather than one request per metric, and ``set_terminated`` (FINISHED, or
FAILED with the reason); on an SQL store, a trial already over when its turn comes is inserted
whole instead (:mod:`paretune.platform.mlflow_sql`; 0.7 instead of 19 ms of CPU per trial). It never stops the search
when the tracking server is unreachable: failed writes are queued and retried in order.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.entities import Metric
from ray.tune import Callback

from paretune.platform.mlflow_writer import WriterCore
from paretune.platform.mlflow_writer import existing_trial_runs as existing_trial_runs
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


class _ProcessWriter:
    """The writer in its own process (see :mod:`paretune.platform.mlflow_writer`), over two pipes."""

    kind = "process"

    def __init__(self, settings: dict[str, Any]) -> None:
        from multiprocessing.connection import Connection

        _reap_lingering()
        ops_r, ops_w = os.pipe()
        replies_r, replies_w = os.pipe()
        try:
            _grow_pipe(ops_w)
            path = os.environ.get("PYTHONPATH")
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_SOURCE_ROOT, path]))}
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "paretune.platform.mlflow_writer"]
                + [str(ops_r), str(replies_w)],
                pass_fds=(ops_r, replies_w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # stderr stays: MLflow's own messages, tracebacks
                env=env,
                start_new_session=True,  # outlives a kill of the driver's group (see its main)
            )
        except BaseException:
            os.close(ops_w)
            os.close(replies_r)
            raise
        finally:
            os.close(ops_r)
            os.close(replies_w)
        self.ops = Connection(ops_w, readable=False)
        self.replies = Connection(replies_r, writable=False)
        self.send(("init", settings))

    def send(self, op: tuple) -> bool:
        """Queue ``op``; False when the process is gone."""
        return self.send_pickled(pickle.dumps(op, protocol=pickle.HIGHEST_PROTOCOL))

    def send_pickled(self, data: bytes) -> bool:
        """Queue an op already pickled (``pickle.dumps``); False when the process is gone."""
        try:
            self.ops.send_bytes(data)
            return True
        except OSError:
            return False

    def replies_ready(self, timeout: float = 0.0) -> list[tuple]:
        out: list[tuple] = []
        try:
            if self.replies.poll(timeout):
                out.append(self.replies.recv())
                while self.replies.poll():
                    out.append(self.replies.recv())
        except (EOFError, OSError):
            pass  # the process is gone: alive() says so
        return out

    def alive(self) -> bool:
        return self.proc.poll() is None

    def exit_code(self) -> int | None:
        return self.proc.poll()

    def release(self) -> None:
        """End the session (everything is written) and keep the process for the next tracker."""
        if self.send(("release",)):
            while _IDLE:
                _IDLE.pop().close(wait=0)
            _IDLE.append(self)
        else:
            self._close_pipes()

    def close(self, wait: float) -> None:
        """Let the process finish what is queued and exit; it outlives ``wait`` if it must."""
        self.send(("close",))
        try:
            self.proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            _LINGERING.append(self)  # keeps its pipe open: it writes on while this process lives
            return
        self._close_pipes()

    def _close_pipes(self) -> None:
        self.ops.close()
        self.replies.close()


# Writers told to close that still had writes to make (an outage at the end of a search).
_LINGERING: list[_ProcessWriter] = []
# A writer process whose session ended with everything written, for the next search.
_IDLE: list[_ProcessWriter] = []
_SOURCE_ROOT = str(Path(__file__).resolve().parents[2])
# Flush tokens, unique in this process: a reused writer's old replies never answer a new flush.
_FLUSH_TOKENS = itertools.count(1)


def _reap_lingering() -> None:
    for w in list(_LINGERING):
        if not w.alive():
            _LINGERING.remove(w)
            w._close_pipes()


def _idle_writer(settings: dict[str, Any]) -> _ProcessWriter | None:
    """The idle writer process, given a new session; None when there is none (or it is gone)."""
    while _IDLE:
        writer = _IDLE.pop()
        writer.replies_ready()  # the last session's leftovers
        if writer.alive() and writer.send(("init", settings)):
            return writer
        writer._close_pipes()
    return None


def _grow_pipe(fd: int) -> None:
    """A 1 MiB pipe buffer: room for thousands of trial events while the writer starts."""
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 1 << 20)
    except (ImportError, AttributeError, OSError):
        pass


class _ThreadWriter:
    """The same writer in a thread of this process (where no process can be started)."""

    kind = "thread"

    def __init__(self, settings: dict[str, Any]) -> None:
        self._replies: deque[tuple] = deque()
        self._ready = threading.Event()
        self.core = WriterCore(settings, self._emit)
        self._thread = threading.Thread(
            target=self.core.run, name="paretune-mlflow-writer", daemon=True
        )
        self._thread.start()

    def _emit(self, message: tuple) -> None:
        self._replies.append(message)
        self._ready.set()

    def send(self, op: tuple) -> bool:
        self.core.submit(op)
        return True

    def send_pickled(self, data: bytes) -> bool:
        self.core.submit(pickle.loads(data))
        return True

    def replies_ready(self, timeout: float = 0.0) -> list[tuple]:
        if not self._replies and timeout > 0:
            self._ready.wait(timeout)
        self._ready.clear()
        out: list[tuple] = []
        while self._replies:
            out.append(self._replies.popleft())
        return out

    def alive(self) -> bool:
        return self._thread.is_alive()

    def exit_code(self) -> int | None:
        return None

    def close(self, wait: float) -> None:
        self.core.submit(("close",))
        self._thread.join(timeout=wait)


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
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.searcher = searcher
        self.arch_params = arch_params
        self.retry_s = retry_s
        self.objectives = objectives
        self.wait_at_end = wait_at_end
        self.runs: dict[str, str] = {}
        self.ended: set[str] = set()
        self._init_transient()

    def _init_transient(self) -> None:
        self.writer: _ProcessWriter | _ThreadWriter | None = None
        self._started: set[str] = set()  # trials started and not ended (in this driver)
        # Every message of a trial, pickled and spooled to disk, until the writer says it is
        # all written: sent again to a new writer if the process dies. A trial ended and not
        # in here is complete in MLflow (written, or so before a restart).
        self._unwritten: dict[str, _Unwritten] = {}
        self._spool = _Spool()
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
        state = {k: self.__dict__[k] for k in keep}
        state["objectives"] = self.objectives  # a restored tracker waits at the end
        state["wait_at_end"] = True
        state.update(retry_s=self.retry_s, runs=dict(self.runs), ended=set(self.ended))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
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
    def _w(self) -> _ProcessWriter | _ThreadWriter:
        if self.writer is None:
            self.writer = self._start_writer()
        return self.writer

    def _start_writer(self) -> _ProcessWriter | _ThreadWriter:
        settings = {
            "tracking_uri": self.tracking_uri,
            "experiment_id": self.experiment_id,
            "parent_run_id": self.parent_run_id,
            "runs": dict(self.runs),
            "ended": sorted(self._written()),
            "retry_s": self.retry_s,
            # "0": every run through MlflowClient's calls (see mlflow_sql).
            "sql_insert": os.environ.get("PARETUNE_MLFLOW_SQL_INSERT", "1") != "0",
        }
        mode = os.environ.get("PARETUNE_MLFLOW_WRITER", "process")
        if mode == "process" and self._restarts <= self.MAX_RESTARTS:
            idle = _idle_writer(settings)
            if idle is not None:
                return idle
            try:
                return _ProcessWriter(settings)
            except Exception as exc:  # noqa: BLE001 - no process: a thread does the same
                logger.warning("MLflow writer process not started (%s); writing from a thread", exc)
        return _ThreadWriter(settings)

    def _apply(self, message: tuple) -> None:
        kind = message[0]
        if kind in ("run", "done", "pictured"):
            self._progress_at = time.monotonic()
        if kind == "run":
            unwritten = self._unwritten.get(message[1])
            # Keyed by the driver's own copy of the trial id, not a second one from the reply.
            self.runs[message[1] if unwritten is None else unwritten.trial_id] = message[2]
        elif kind == "done":
            unwritten = self._unwritten.pop(message[1], None)
            if unwritten is not None:
                self._spool.release(unwritten.refs)
        elif kind == "pictured":
            self.pictured.update(message[1])
        elif kind == "flushed":
            self._flushed = max(self._flushed, message[1])
        elif kind == "runs":
            self.runs.update(message[1])
            self.ended.update(message[2])
            self._ended_elsewhere.update(message[2])
        elif kind == "warning":
            logger.warning("%s", message[1])

    def _drain(self, timeout: float = 0.0) -> None:
        if self.writer is not None:
            for message in self.writer.replies_ready(timeout):
                self._apply(message)

    def _send(self, trial_id: str, op: tuple) -> None:
        # Kept pickled and on disk (see _Spool): a writer behind a slow server can fall behind
        # by more trials the longer the search runs, and the driver keeps one int per message.
        data = pickle.dumps(op, protocol=pickle.HIGHEST_PROTOCOL)
        unwritten = self._unwritten.get(trial_id)
        if unwritten is None:
            unwritten = self._unwritten[trial_id] = _Unwritten(trial_id)
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

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything sent so far is written.

        False when ``timeout`` seconds pass without progress: a slow store that keeps writing
        (a run made, a trial complete) is waited for, a stalled one is not.
        """
        self._progress_at = time.monotonic()
        while True:
            token = next(_FLUSH_TOKENS)
            if not self._w().send(("flush", token)):
                self._restart_writer()
                continue
            while self._flushed < token:
                left = self._progress_at + timeout - time.monotonic()
                if left <= 0:
                    return False
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
        self._send(trial_id, ("start", trial_id, tags, params, int(time.time() * 1000)))

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        if trial.trial_id in self.ended:
            return  # finished before a restart: replayed from the journal, already complete
        if trial.trial_id not in self._started:
            self._start(trial)
        self._send_result(trial, result)

    def _send_result(self, trial: Any, result: Mapping[str, Any]) -> None:
        batch = [(m.key, m.value, m.timestamp, m.step) for m in result_metrics(result)]
        if batch:
            self._send(trial.trial_id, ("result", trial.trial_id, batch))

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
        self._send(trial.trial_id, ("end", trial.trial_id, status, tags, int(time.time() * 1000)))

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
            self._w().send(("cells", dict(archs)))

    def finish_writes(self, timeout: float = 120.0) -> bool:
        """Wait until every write is made, then let the writer go.

        False after ``timeout`` seconds without progress (the store is unreachable); writes
        still queued then are the writer's to finish (it outlives this call) or
        ``paretune sync-mlflow``'s.
        """
        if self.writer is None:
            return True
        written = self.flush(timeout=timeout)
        if not written:
            logger.warning(
                "no MLflow write for %.0f s: writes of %d trials still queued at the end; "
                "run `paretune sync-mlflow EXPERIMENT_DIR` once the store is back",
                timeout,
                len(self._unwritten),
            )
        writer, self.writer = self._w(), None
        if written and isinstance(writer, _ProcessWriter):
            writer.release()
        else:
            writer.close(wait=10 if written else 0)
        return written


class _Unwritten:
    """A trial's messages (their :class:`_Spool` references) that the writer has not yet said
    are written."""

    __slots__ = ("trial_id", "refs")

    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id
        self.refs: list[int] = []


class _Spool:
    """Pickled messages kept for a resend, in anonymous temporary files instead of the heap.

    The writer can fall behind for as long as the search runs: with a REST ``mlflow server`` on
    2 cores it wrote about 40% as fast as 8 table trials finished (1,530 trials behind after
    2,500, benchmarks/scale.py). Kept in memory, that backlog (about 2 KB a trial) made driver
    memory grow with the number of trials. Here each message is appended to a file and named by
    one int (file, offset, length); a file all of whose messages are written is closed (the
    system deletes it) and files roll over at :attr:`CHUNK_BYTES`, so disk use follows the
    backlog. Where no temporary file can be made or written, messages stay in memory (with a
    warning).
    """

    CHUNK_BYTES = 8 << 20

    def __init__(self) -> None:
        self._files: dict[int, Any] = {}  # chunk number -> open temporary file
        self._live: dict[int, int] = {}  # chunk number -> messages not yet released
        self._chunk = 0
        self._size = 0  # bytes in the current chunk
        self._no_files = False  # a file could not be made or written: keep messages in memory
        self._in_memory: dict[int, bytes] = {}  # negative refs, those kept in memory
        self._last_memory_ref = 0

    def put(self, data: bytes) -> int:
        """Keep ``data``; returns its reference."""
        if not self._no_files:
            if self._size >= self.CHUNK_BYTES:  # roll over; the old file goes once written
                self._chunk, self._size = self._chunk + 1, 0
            try:
                f = self._files.get(self._chunk)
                if f is None:
                    f = self._files[self._chunk] = tempfile.TemporaryFile(prefix="paretune-mlflow-")
                done = 0
                while done < len(data):
                    done += os.pwrite(f.fileno(), data[done:], self._size + done)
            except OSError as exc:  # no file, or a full disk: never a reason to stop a search
                logger.warning("unwritten MLflow messages kept in memory, not on disk (%s)", exc)
                self._no_files = True
                if self._chunk not in self._live and self._chunk in self._files:
                    self._files.pop(self._chunk).close()  # made for this message only
            else:
                ref = (self._chunk << 80) | (self._size << 40) | len(data)
                self._size += len(data)
                self._live[self._chunk] = self._live.get(self._chunk, 0) + 1
                return ref
        self._last_memory_ref -= 1
        self._in_memory[self._last_memory_ref] = data
        return self._last_memory_ref

    def get(self, ref: int) -> bytes:
        """The message ``ref`` names (until it is released)."""
        if ref < 0:
            return self._in_memory[ref]
        chunk, offset, length = ref >> 80, (ref >> 40) & ((1 << 40) - 1), ref & ((1 << 40) - 1)
        return os.pread(self._files[chunk].fileno(), length, offset)

    def release(self, refs: list[int]) -> None:
        """The messages ``refs`` are written: forget them, and drop emptied files."""
        for ref in refs:
            if ref < 0:
                self._in_memory.pop(ref, None)
                continue
            chunk = ref >> 80
            self._live[chunk] -= 1
            if self._live[chunk] == 0:
                del self._live[chunk]
                if chunk == self._chunk:  # the current file: start it over
                    self._size = 0
                    os.ftruncate(self._files[chunk].fileno(), 0)
                else:
                    self._files.pop(chunk).close()


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
