"""Per-trial memory guard and deliberate fault injection (for testing failure handling).

``MemoryGuard`` watches the resident memory of the trial's process from a thread and, when it
exceeds the configured limit, raises ``TrialOutOfMemory`` in the trial's thread (between Python
bytecodes: an allocation inside one long C call is caught right after it). Ray's own memory
monitor still protects the node from allocations the guard cannot interrupt.

``FaultInjector`` makes chosen trials raise, return NaN or run out of memory, decided by a hash
of (seed, architecture), so a test can check that failures are recorded and the search goes on.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import threading
import time
from pathlib import Path
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
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(self._target), ctypes.py_object(TrialOutOfMemory)
                )
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


class InjectedFault(RuntimeError):
    """A failure injected on purpose by ``faults`` in the config."""


class FaultInjector:
    """Decides, per architecture, whether a trial raises, returns NaN or exhausts memory."""

    def __init__(
        self,
        raise_rate: float = 0.0,
        nan_rate: float = 0.0,
        memory_rate: float = 0.0,
        transient: bool = False,
        delay_s: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.rates = (("raise", raise_rate), ("nan", nan_rate), ("memory", memory_rate))
        self.transient = transient
        self.delay_s = delay_s
        self.seed = seed

    def fault_for(self, arch: str) -> str | None:
        digest = hashlib.sha256(f"{self.seed}:{arch}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        edge = 0.0
        for name, rate in self.rates:
            edge += rate
            if u < edge:
                return name
        return None

    def before(self, arch: str, attempts_dir: str | Path | None, trial_id: str) -> str | None:
        """The fault to apply now (``None``: evaluate normally). Raises for ``raise``.

        ``attempts_dir`` (shared by every attempt of a trial) remembers which trials already
        had their transient fault, so that Ray's retry of the trial succeeds.
        """
        if self.delay_s:
            time.sleep(self.delay_s)
        fault = self.fault_for(arch)
        if fault is None:
            return None
        if self.transient and attempts_dir:
            marker = Path(attempts_dir) / f"{trial_id}.fault"
            if marker.exists():
                return None  # a retry of a transient fault succeeds
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        if fault == "raise":
            raise InjectedFault(f"injected failure for {arch}")
        if fault == "memory":
            hog = []
            while True:  # until the guard (or Ray's memory monitor) stops the trial
                hog.append(bytearray(16 * 2**20))
        return fault
