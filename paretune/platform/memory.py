"""Keeping the Ray Tune driver's memory flat over thousands of trials.

Ray Tune keeps every trial object until the search ends, and each carries bookkeeping that is
only useful while the trial runs. Measured on Ray 2.x with a tabular search (tracemalloc, deep
sizes per finished trial): ``run_metadata.metric_n_steps`` (two ``deque`` windows per numeric
metric, about 30 KB), the object reference of the trial's default result, and one placement
group factory object per trial. :class:`TrimFinishedTrials` drops those as a trial finishes.
What stays per trial (the ``Trial`` object, its config, last result and storage context, about
10 KB) is Ray's own and is needed for the experiment checkpoint, ``Tuner.restore`` and the
final ``ResultGrid``.

The driver's resident memory also grows with heap fragmentation: Ray uploads the experiment
state (a JSON of every trial) from a new thread each time, and glibc gives each thread an
arena of that size. The callback hands free heap pages back to the system (``malloc_trim``)
every ``trim_every_s`` seconds where glibc is the C library.

:func:`without_tensorboard` stops Ray from adding its TensorBoard logger (one event-file writer
thread per trial); paretune tracks trials in MLflow, and Ray's JSON and CSV results, which
``paretune report`` and ``resume`` read, are still written.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

from ray.tune import Callback


class TrimFinishedTrials(Callback):
    """Drops what a finished trial no longer needs; see the module doc.

    Ray calls every callback before it marks the trial finished and saves its state, so the
    saved state is the trimmed one. Callbacks before it see the whole trial; it keeps what
    they read (config, last result, error).

    Args:
        keep_metrics: when given, a finished trial keeps Ray's running statistics
            (``metric_analysis``: max, min, averages) of these metrics only (about 8 KB per
            trial for a dozen metrics). ``ResultGrid.get_best_result`` needs them for the
            metric it ranks by; results themselves (``last_result``) are kept whole.
        trim_every_s: seconds between ``malloc_trim`` calls (0: never).
    """

    def __init__(
        self, keep_metrics: Iterable[str] | None = None, trim_every_s: float = 10.0
    ) -> None:
        self.keep_metrics = None if keep_metrics is None else frozenset(keep_metrics)
        self.trim_every_s = trim_every_s
        self._shared_pgf: dict[Any, Any] = {}
        self._last_trim = time.monotonic()

    def __getstate__(self) -> dict[str, Any]:  # pickled with the tuner
        return {"keep_metrics": self.keep_metrics, "trim_every_s": self.trim_every_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._trim(trial, errored=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._trim(trial, errored=True)

    def _trim(self, trial: Any, *, errored: bool) -> None:
        meta = getattr(trial, "run_metadata", None)
        if meta is not None:
            if errored:
                # A retried trial (resume_errored, max_failures) feeds new results to
                # update_metric, which needs a window for every metric it has statistics
                # of: start both afresh.
                meta.metric_analysis = {}
            meta.metric_n_steps = {}  # the windows of last-5/last-10 averages
            if self.keep_metrics is not None and not errored:
                meta.metric_analysis = {
                    k: v for k, v in meta.metric_analysis.items() if k in self.keep_metrics
                }
            future = trial.__dict__.get("_default_result_or_future")
            # Only read while a trial has not reported (Trial.last_result, a property that
            # would wait on the reference: the stored result is looked at instead).
            reported = any(k != "trial_id" for k in (meta.last_result or {}))
            if future is not None and not isinstance(future, dict) and reported:
                trial._default_result_or_future = None
        pgf = getattr(trial, "placement_group_factory", None)
        if pgf is not None:
            # Equal factories compare and hash equal: one shared object serves them all.
            trial.placement_group_factory = self._shared_pgf.setdefault(pgf, pgf)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self.trim_every_s and time.monotonic() - self._last_trim > self.trim_every_s:
            self._last_trim = time.monotonic()
            release_free_heap()


_LIBC: Any = None


def release_free_heap() -> bool:
    """Give free heap pages of every malloc arena back to the system (glibc only)."""
    global _LIBC
    if _LIBC is None:
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name) if name else None
        except OSError:
            libc = None
        _LIBC = libc if libc is not None and hasattr(libc, "malloc_trim") else False
    if not _LIBC:
        return False
    _LIBC.malloc_trim(0)
    return True


@contextlib.contextmanager
def without_tensorboard() -> Iterator[None]:
    """Within: Ray Tune adds no logger callbacks of its own (pass JSON and CSV loggers)."""
    key = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"
    old = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old
