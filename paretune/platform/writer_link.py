"""How :class:`~paretune.platform.tracking.MlflowTracker` reaches its writer: a process of
its own (:class:`ProcessWriter`) or a thread (:class:`ThreadWriter`), and the spool that keeps
the driver's copy of every message until the writer says it is written (:class:`Spool`).
"""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paretune.platform.mlflow_writer import ORPHAN_GRACE_S, WriterCore
from paretune.platform.writer_messages import Close, Init, Message, Reply, WriterSettings

logger = logging.getLogger(__name__)


class ProcessWriter:
    """The writer in its own process (see :mod:`paretune.platform.mlflow_writer`), over two pipes.

    Messages are :mod:`~paretune.platform.writer_messages` dataclasses, pickled between
    paretune's own two processes.
    """

    kind = "process"

    def __init__(self, settings: WriterSettings) -> None:
        from multiprocessing.connection import Connection

        ops_r, ops_w = os.pipe()
        replies_r, replies_w = os.pipe()
        try:
            _grow_pipe(ops_w)
            path = os.environ.get("PYTHONPATH")
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [SOURCE_ROOT, path]))}
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "paretune.platform.mlflow_writer"]
                + [str(ops_r), str(replies_w)],
                pass_fds=(ops_r, replies_w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # stderr stays: a crash of the writer itself
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
        self.send(Init(settings))

    def send(self, message: Message) -> bool:
        """Queue ``message``; False when the process is gone."""
        return self.send_pickled(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))

    def send_pickled(self, data: bytes) -> bool:
        """Queue a message already pickled; False when the process is gone."""
        try:
            self.ops.send_bytes(data)
            return True
        except OSError:
            return False

    def replies_ready(self, timeout: float = 0.0) -> list[Reply]:
        out: list[Reply] = []
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

    def close(self, wait: float) -> None:
        """Let the process write what is queued and exit.

        After ``wait`` seconds it is left to finish on its own (for up to
        ``mlflow_writer.ORPHAN_GRACE_S`` seconds of failed writes): its pipes close here.
        """
        self.send(Close())
        try:
            self.proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass  # it writes on by itself; the subprocess module reaps it once it exits
        self.ops.close()
        self.replies.close()


SOURCE_ROOT = str(Path(__file__).resolve().parents[2])


def _grow_pipe(fd: int) -> None:
    """A 1 MiB pipe buffer: room for thousands of trial events while the writer starts."""
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 1 << 20)
    except (ImportError, AttributeError, OSError):
        pass


class ThreadWriter:
    """The same writer in a thread of this process (where no process can be started)."""

    kind = "thread"

    def __init__(self, settings: WriterSettings) -> None:
        self._replies: deque[Reply] = deque()
        self._ready = threading.Event()
        self.core = WriterCore(settings, self._emit)
        self._thread = threading.Thread(
            target=self.core.run, name="paretune-mlflow-writer", daemon=True
        )
        self._thread.start()

    def _emit(self, message: Reply) -> None:
        self._replies.append(message)
        self._ready.set()

    def send(self, message: Message) -> bool:
        self.core.submit(message)
        return True

    def send_pickled(self, data: bytes) -> bool:
        self.core.submit(pickle.loads(data))  # the tracker's own bytes, from send's format
        return True

    def replies_ready(self, timeout: float = 0.0) -> list[Reply]:
        if not self._replies and timeout > 0:
            self._ready.wait(timeout)
        self._ready.clear()
        out: list[Reply] = []
        while self._replies:
            out.append(self._replies.popleft())
        return out

    def alive(self) -> bool:
        return self._thread.is_alive()

    def exit_code(self) -> int | None:
        return None

    def close(self, wait: float) -> None:
        self.core.give_up_at = time.monotonic() + ORPHAN_GRACE_S
        self.core.submit(Close())
        self._thread.join(timeout=wait)


def sqlite_file(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (else ``None``)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///").split("?", 1)[0]).expanduser().resolve()


def file_identity(path: Path | None) -> tuple[int, int] | None:
    """``(device, inode)`` of a file, ``None`` when there is none."""
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


class Unwritten:
    """A trial's messages (their :class:`SpoolRef`) that the writer has not yet said are
    written."""

    __slots__ = ("trial_id", "refs")

    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id
        self.refs: list[SpoolRef] = []


@dataclass(frozen=True, slots=True)
class SpoolRef:
    """Where :class:`Spool` keeps one message: ``length`` bytes at ``offset`` of file
    ``chunk``, or, when ``chunk`` is ``None``, in memory under the key ``offset``."""

    chunk: int | None
    offset: int
    length: int


class Spool:
    """Pickled messages kept for a resend, in anonymous temporary files instead of the heap.

    The writer can fall behind for as long as the search runs (a REST ``mlflow server`` on 2
    cores wrote about 40% as fast as 8 table trials finished, benchmarks/scale.py). Kept in
    memory, that backlog (about 2 KB a trial) made driver memory grow with the number of
    trials. Here each message is appended to a file and named by a :class:`SpoolRef`; a file
    all of whose messages are written is closed (the system deletes it) and files roll over at
    :attr:`CHUNK_BYTES`, so disk use follows the backlog. Where no temporary file can be made
    or written (a full disk), messages stay in memory, with one warning.
    """

    CHUNK_BYTES = 8 << 20

    def __init__(self) -> None:
        self._files: dict[int, Any] = {}  # chunk number -> open temporary file
        self._live: dict[int, int] = {}  # chunk number -> messages not yet released
        self._chunk = 0
        self._size = 0  # bytes in the current chunk
        self._no_files = False  # a file could not be made or written: keep messages in memory
        self._in_memory: dict[int, bytes] = {}
        self._memory_keys = itertools.count()

    def put(self, data: bytes) -> SpoolRef:
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
                ref = SpoolRef(self._chunk, self._size, len(data))
                self._size += len(data)
                self._live[self._chunk] = self._live.get(self._chunk, 0) + 1
                return ref
        key = next(self._memory_keys)
        self._in_memory[key] = data
        return SpoolRef(None, key, len(data))

    def get(self, ref: SpoolRef) -> bytes:
        """The message ``ref`` names (until it is released)."""
        if ref.chunk is None:
            return self._in_memory[ref.offset]
        return os.pread(self._files[ref.chunk].fileno(), ref.length, ref.offset)

    def release(self, refs: list[SpoolRef]) -> None:
        """The messages ``refs`` are written: forget them, and drop emptied files."""
        for ref in refs:
            chunk = ref.chunk
            if chunk is None:
                self._in_memory.pop(ref.offset, None)
                continue
            self._live[chunk] -= 1
            if self._live[chunk] == 0:
                del self._live[chunk]
                if chunk == self._chunk:  # the current file: start it over
                    self._size = 0
                    os.ftruncate(self._files[chunk].fileno(), 0)
                else:
                    self._files.pop(chunk).close()
