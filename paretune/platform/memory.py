"""Keeping the Ray Tune driver's memory flat over thousands of trials.

Ray Tune keeps every trial object until the search ends, and each carries bookkeeping that is
only useful while the trial runs. Measured on Ray 2.x with a tabular search (tracemalloc, deep
sizes per finished trial): ``run_metadata.metric_n_steps`` (two ``deque`` windows per numeric
metric, about 30 KB), the object reference of the trial's default result, and one placement
group factory object per trial. :class:`TrimFinishedTrials` drops those as a trial finishes.

Ray also gives every trial its own copies of what is equal between trials (its search
generator deep-copies the experiment spec per trial): the storage context's syncer, sync
settings and file system, the checkpoint settings, the keys and repeated values of the last
result (``last-5-avg`` and such in the running statistics too), the config inside the last
result and a second, unresolved copy of the config. The callback makes equal ones one object
(Python blocks left per trial: about 140 before, 108 after, benchmarks/scale.py). Ray's JSON
encoder also leaves one log-once key per trial in ``ray.util.debug`` (about 600 bytes, the
storage context's repr): :func:`forget_encoder_log_keys` drops them.

What stays per trial is Ray's own and is needed for the experiment checkpoint,
``Tuner.restore`` and the final ``ResultGrid``: the ``Trial`` object, its config, last result
and storage context (about 5 KB), and above all the trial's experiment-state JSON, which the
controller caches per trial (``TuneController._trial_metadata``: the trial's state and its run
metadata, indented JSON with the pickled storage context in hex, about 6 KB). No callback
reaches that cache; the launcher therefore runs a long search as several ``Tuner.fit``
segments (``search.segment_size``), each freeing its trials when it ends. Freeing needs a
full garbage collection: in a long fit Ray leaves the controller with its trials in reference
cycles (measured: all 500 trials of a 500-trial segment, with their storage contexts and run
metadata, still there as garbage when the next segment started), and the collector's own
full collections come seldom in a driver of half a million objects. What the driver then
keeps from segment to segment is the searcher's history and the MLflow tracker's trial and
run ids (about 1.5 KB of Python objects per trial, tracemalloc). The messages of trials the
MLflow writer has not written yet wait in temporary files, not in memory (one int each): a
writer behind a slow server can fall further behind the longer a search runs (see
``tracking._Spool``).

Resident memory also grows in steps when Ray saves the experiment state (every 10 s or
more): the save builds the JSON of every trial (about 3.5 KB of transient Python objects per
trial) and a new thread copies the whole driver staging folder, every trial's result files
included, to the storage path (``pyarrow.fs.copy_files``; its file listing and copy tasks take
about 8 KB of C++ heap per trial while it runs). Both are freed, but glibc raises its mmap and
trim thresholds as large blocks come and go (up to 32 and 64 MB) and keeps freed heap that
way: :func:`fix_malloc_thresholds` fixes them (128 KB, 1 MB) when the search starts (measured:
resident memory right after a copy of 2,000 trials' files +12 MB instead of +16 MB, and a
lower end of the search), and the callback hands free pages of every arena back to the
system (``malloc_trim``) every ``trim_every_s`` seconds; both only where glibc is the C
library. These steps, which grow with the number of trials, are Ray's and stay.

:func:`without_tensorboard` stops Ray from adding its TensorBoard logger (one event-file writer
thread per trial); paretune tracks trials in MLflow, and Ray's JSON and CSV results, which
``paretune report`` and ``resume`` read, are still written.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

import ray
from ray import cloudpickle
from ray.tune import Callback
from ray.util import debug

logger = logging.getLogger(__name__)


PRIVATE_TRIM_ENV = "PARETUNE_RAY_PRIVATE_TRIM"


class TrimFinishedTrials(Callback):
    """Drops what a finished trial no longer needs; see the module doc.

    Ray calls every callback before it marks the trial finished and saves its state, so the
    saved state is the trimmed one. Callbacks before it see the whole trial; it keeps what
    they read (config, last result, error), with equal parts shared between trials. At the
    start of the search it fixes glibc's malloc thresholds (:func:`fix_malloc_thresholds`).

    Args:
        keep_metrics: when given, a finished trial keeps Ray's running statistics
            (``metric_analysis``: max, min, averages) of these metrics only (about 8 KB per
            trial for a dozen metrics). ``ResultGrid.get_best_result`` needs them for the
            metric it ranks by; results themselves (``last_result``) are kept whole.
        trim_every_s: seconds between ``malloc_trim`` calls (0: never).
        private_parts: also drop or share what Ray keeps in its private attributes
            (:func:`share_private_parts`); off unless ``PARETUNE_RAY_PRIVATE_TRIM=1``, so the
            default path touches only Ray's public trial attributes.
    """

    def __init__(
        self,
        keep_metrics: Iterable[str] | None = None,
        trim_every_s: float = 10.0,
        private_parts: bool | None = None,
    ) -> None:
        self.keep_metrics = None if keep_metrics is None else frozenset(keep_metrics)
        self.trim_every_s = trim_every_s
        if private_parts is None:
            private_parts = os.environ.get(PRIVATE_TRIM_ENV, "0") == "1"
        self.private_parts = private_parts
        self._shared_pgf: dict[Any, Any] = {}
        self._shared_objs: dict[tuple[type, bytes], Any] = {}
        self._strings: dict[str, str] = {}
        self._last_trim = time.monotonic()

    def __getstate__(self) -> dict[str, Any]:  # pickled with the tuner
        return {
            "keep_metrics": self.keep_metrics,
            "trim_every_s": self.trim_every_s,
            "private_parts": self.private_parts,
        }

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
            # Only read while a trial has not reported (Trial.last_result, a property that
            # would wait on the reference: the stored result is looked at instead).
            reported = any(k != "trial_id" for k in (meta.last_result or {}))
            if isinstance(meta.last_result, dict) and reported:
                meta.last_result = self._shared_result(meta.last_result, trial)
            meta.metric_analysis = {
                self._share_str(k): {self._share_str(s): v for s, v in stats.items()}
                for k, stats in meta.metric_analysis.items()
            }
            if self.private_parts:
                share_private_parts(trial, self._share_obj, reported=reported)
        pgf = getattr(trial, "placement_group_factory", None)
        if pgf is not None:
            # Equal factories compare and hash equal: one shared object serves them all.
            trial.placement_group_factory = self._shared_pgf.setdefault(pgf, pgf)
        storage = getattr(trial, "storage", None)
        for name in ("sync_config", "syncer", "storage_filesystem"):
            if storage is not None and getattr(storage, name, None) is not None:
                setattr(storage, name, self._share_obj(getattr(storage, name)))

    def _share_str(self, s: Any) -> Any:
        """The first equal string seen (a bounded cache: names and repeated values)."""
        if not isinstance(s, str) or len(s) > _SHARED_STR_LEN:
            return s
        got = self._strings.get(s)
        if got is None:
            if len(self._strings) >= _SHARED_STRINGS:
                return s
            self._strings[s] = got = s
        return got

    def _shared_result(self, result: dict, trial: Any) -> dict:
        """``result`` with its keys and short string values shared between trials."""
        out = {self._share_str(k): self._share_str(v) for k, v in result.items()}
        if isinstance(out.get("config"), dict) and out["config"] == trial.config:
            out["config"] = trial.config  # Ray's copy of the trial's config
        return out

    def _share_obj(self, obj: Any) -> Any:
        """One object for all equal ones (equal: the same pickle), or ``obj`` itself."""
        try:
            key = (type(obj), cloudpickle.dumps(obj))
        except Exception:  # noqa: BLE001 - not picklable: keep it as it is
            return obj
        if key not in self._shared_objs and len(self._shared_objs) >= _SHARED_OBJECTS:
            return obj
        return self._shared_objs.setdefault(key, obj)

    def setup(self, **info: Any) -> None:
        fix_malloc_thresholds()

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self.trim_every_s and time.monotonic() - self._last_trim > self.trim_every_s:
            self._last_trim = time.monotonic()
            forget_encoder_log_keys()
            release_free_heap()


# Strings shared by TrimFinishedTrials: result keys and repeated values are short and few.
_SHARED_STR_LEN = 256
_SHARED_STRINGS = 4096
_SHARED_OBJECTS = 64  # distinct storage and checkpoint settings (one or two in a search)


_LIBC: Any = None


def _glibc() -> Any:
    """glibc through ctypes, or False where the C library is another."""
    global _LIBC
    if _LIBC is None:
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name) if name else None
        except OSError:
            libc = None
        ok = libc is not None and all(hasattr(libc, f) for f in ("malloc_trim", "mallopt"))
        _LIBC = libc if ok else False
    return _LIBC


def release_free_heap() -> bool:
    """Give free heap pages of every malloc arena back to the system (glibc only)."""
    libc = _glibc()
    if not libc:
        return False
    libc.malloc_trim(0)
    return True


# glibc's mallopt parameters (malloc.h) and the values set.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024
TRIM_THRESHOLD = 1024 * 1024


def fix_malloc_thresholds() -> bool:
    """Fixed mmap and trim thresholds for glibc's malloc in this process (glibc only)."""
    libc = _glibc()
    if not libc:
        return False
    ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    return libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok


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


# ---------------------------------------------------------------------- Ray's private parts
# The one place that touches attributes Ray does not publish. Tested with these Ray versions
# (major, minor), both ends included; pyproject.toml bounds Ray to them. Outside them nothing
# private is touched (one warning); inside them an attribute that is not where it should be
# raises (tests/platform/test_memory.py checks each on a real trial), never a silent no-op.
RAY_TESTED = ((2, 60), (2, 60))


def ray_version() -> tuple[int, int]:
    """The installed Ray's (major, minor)."""
    major, minor = ray.__version__.split(".")[:2]
    return int(major), int(minor)


def ray_private_parts_supported() -> bool:
    """Whether the installed Ray is one whose private parts :mod:`memory` was tested on."""
    ok = RAY_TESTED[0] <= ray_version() <= RAY_TESTED[1]
    if not ok and not _WARNED:
        _WARNED.append(True)
        logger.warning(
            "Ray %s is outside the versions paretune's driver-memory trimming was tested with "
            "(%s to %s): trimming only through Ray's public attributes",
            ray.__version__,
            ".".join(map(str, RAY_TESTED[0])),
            ".".join(map(str, RAY_TESTED[1])),
        )
    return ok


_WARNED: list[bool] = []


def share_private_parts(trial: Any, share: Any, *, reported: bool) -> None:
    """Drop or share what a finished trial keeps in Ray's private attributes.

    The reference of the trial's default result (a finished trial that reported has its
    result), Ray's second, unresolved copy of the config (one object when equal), and the
    checkpoint settings (``share``: one object for equal ones).
    """
    if not ray_private_parts_supported():
        return
    attrs = trial.__dict__
    future = attrs["_default_result_or_future"]
    if future is not None and not isinstance(future, dict) and reported:
        attrs["_default_result_or_future"] = None
    if attrs["_Trial__unresolved_config"] == trial.config:
        attrs["_Trial__unresolved_config"] = trial.config
    manager = trial.run_metadata.checkpoint_manager
    manager._checkpoint_config = share(manager._checkpoint_config)


def forget_encoder_log_keys() -> int:
    """Drop the keys Ray's JSON encoder leaves in ``ray.util.debug``'s log-once set.

    ``TuneFunctionEncoder`` adds ``tune_func_encode:<repr of the object>`` for every object
    it pickles, and a trial's storage context has a repr of its own: one key (about 600
    bytes) per trial, kept for good. Forgetting them only means that its debug message
    ("Falling back to cloudpickle") may be logged again.
    """
    if not ray_private_parts_supported():
        return 0
    logged: set = debug._logged
    stale = [k for k in list(logged) if isinstance(k, str) and k.startswith("tune_func_encode:")]
    logged.difference_update(stale)
    return len(stale)
