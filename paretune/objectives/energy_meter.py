"""Energy readings, the meter base class and the idle baseline (no torch, no Ray)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SOURCE_NVML = "measured-nvml"
SOURCE_RAPL = "measured-rapl"
SOURCE_ESTIMATED = "estimated"
METER_KINDS = ("auto", "nvml", "rapl", "estimate")
POWERCAP_ROOT = "/sys/class/powercap"


class EnergyUnavailable(RuntimeError):
    """This meter cannot measure here; the message says why."""


# ---------------------------------------------------------------------- meters
@dataclass(frozen=True)
class EnergyReading:
    """Energy drawn over a window.

    Attributes:
        joules: energy, J.
        seconds: length of the window, s.
        source: ``measured-nvml`` or ``measured-rapl``.
        method: how: ``nvml-energy-counter``, ``nvml-power-polling`` or ``rapl-counter``.
        samples: counter or power readings taken.
    """

    joules: float
    seconds: float
    source: str
    method: str
    samples: int = 2

    @property
    def watts(self) -> float:
        return self.joules / self.seconds if self.seconds > 0 else float("nan")


class EnergyWindow:
    """A running measurement; :meth:`read` gives the energy so far, :meth:`stop` ends it.

    The meter's sampler thread (when it has one) runs between :meth:`EnergyMeter.start` and
    :meth:`stop`; a window is also a context manager (``with meter.start() as w: ...``).
    """

    def __init__(self, meter: EnergyMeter) -> None:
        self.meter = meter
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = meter._begin()
        self.started = time.perf_counter()  # after _begin, which may wait for a counter update
        self.reading: EnergyReading | None = None
        interval = meter.poll_interval_s
        if interval is not None:
            self._thread = threading.Thread(target=self._poll, args=(interval,), daemon=True)
            self._thread.start()

    def _poll(self, interval: float) -> None:
        while not self._stopped.wait(interval):
            with self._lock:
                self.meter._sample(self._state)

    def read(self) -> EnergyReading:
        """The energy since the start (the window keeps running)."""
        with self._lock:
            self.meter._sample(self._state)
            return self.meter._reading(self._state, time.perf_counter() - self.started)

    def stop(self) -> EnergyReading:
        """End the window; returns (and keeps in ``reading``) its energy."""
        if self.reading is not None:
            return self.reading
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            self.meter._finish(self._state)
            seconds = time.perf_counter() - self.started
            self.reading = self.meter._reading(self._state, seconds)
        return self.reading

    def __enter__(self) -> EnergyWindow:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class EnergyMeter:
    """Base class of the meters: ``start()`` opens an :class:`EnergyWindow`.

    Subclasses implement ``_begin`` (state at the start), ``_sample`` (update the state with a
    new reading), ``_reading`` (the energy so far) and optionally ``_finish`` (the last reading,
    by default a ``_sample``); ``poll_interval_s`` (or ``None``) says how often a thread calls
    ``_sample`` while a window is open.
    """

    source: str = "measured"
    poll_interval_s: float | None = None

    def start(self) -> EnergyWindow:
        return EnergyWindow(self)

    def describe(self) -> str:
        return type(self).__name__

    def _begin(self) -> Any:
        raise NotImplementedError

    def _sample(self, state: Any) -> None:
        raise NotImplementedError

    def _finish(self, state: Any) -> None:
        self._sample(state)

    def _reading(self, state: Any, seconds: float) -> EnergyReading:
        raise NotImplementedError


# ---------------------------------------------------------------------- above idle
def measure_idle(
    meter: EnergyMeter, seconds: float, *, sleep: Callable[[float], None] = time.sleep
) -> EnergyReading:
    """The idle baseline: the energy ``meter`` reads over ``seconds`` while this process queues
    no work (call it after synchronising the device). Its ``watts`` is the idle power.

    Raises:
        ValueError: ``seconds`` is not > 0.
        EnergyUnavailable: the meter read a power that is not a finite number >= 0.
    """
    if not seconds > 0:
        raise ValueError(f"measure_idle: seconds={seconds!r} must be > 0")
    window = meter.start()
    try:
        sleep(seconds)
    finally:
        reading = window.stop()
    if not (math.isfinite(reading.watts) and reading.watts >= 0):
        raise EnergyUnavailable(
            f"{meter.describe()} read an idle power of {reading.watts!r} W over "
            f"{reading.seconds:.3g} s"
        )
    return reading


def energy_above_idle(total: EnergyReading, idle: EnergyReading) -> tuple[float, str]:
    """Energy of ``total`` above the idle power of ``idle``, in joules, and the method tag.

    ``total.joules - idle.watts * total.seconds``: what the work drew beyond what the device
    draws doing nothing over the same time. Near 0, and possibly below, for work within the
    meter's noise; the caller decides what to report then.
    """
    joules = total.joules - idle.watts * total.seconds
    return joules, f"{total.method} minus idle power x window time"


def finite_positive(value: float) -> bool:
    """True for a finite number > 0 (a usable energy)."""
    return isinstance(value, int | float) and math.isfinite(value) and value > 0
