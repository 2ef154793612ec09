"""Per-trial memory guard.

``MemoryGuard`` watches the resident memory of the trial's process from a thread and, when it
exceeds the configured limit, raises ``TrialOutOfMemory`` in the trial's thread (between Python
bytecodes: an allocation inside one long C call is caught right after it). Ray's own memory
monitor still protects the node from allocations the guard cannot interrupt. Raising in another
thread has no Python-level API; :func:`raise_in_thread` is the one place that uses CPython's
C API for it (``PyThreadState_SetAsyncExc``, part of the stable C API).
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Any


class TrialOutOfMemory(MemoryError):
    """The trial's process went over its memory limit and was stopped by the guard."""


def rss_mb() -> float:
    """Resident set size of this process, MB (from /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def raise_in_thread(thread_id: int, exc_type: type[BaseException]) -> bool:
    """Make ``exc_type`` be raised in thread ``thread_id`` at its next Python bytecode;
    False when there is no such thread."""
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc_type)
    )
    if done > 1:  # several threads matched: undo, as CPython's documentation says
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)
    return done == 1


class MemoryGuard:
    """Context manager: raise ``TrialOutOfMemory`` in this thread when RSS exceeds ``limit_mb``."""

    def __init__(self, limit_mb: float | None, interval_s: float = 0.05) -> None:
        self.limit_mb = limit_mb
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self.tripped = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._target = threading.get_ident()

    def __enter__(self) -> MemoryGuard:
        if self.limit_mb is not None:
            self._target = threading.get_ident()
            self._thread = threading.Thread(
                target=self._watch, name="paretune-memory-guard", daemon=True
            )
            self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            used = rss_mb()
            self.peak_mb = max(self.peak_mb, used)
            if used > self.limit_mb and not self.tripped:
                self.tripped = True
                raise_in_thread(self._target, TrialOutOfMemory)
                return

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.tripped and exc[0] is TrialOutOfMemory:
            raise TrialOutOfMemory(
                f"trial used more than its memory limit of {self.limit_mb:.0f} MB (peak seen {self.peak_mb:.0f} MB); "
                "stopped by the OOM guard"
            ) from None
