"""Energy: measured with NVML or RAPL where the hardware allows, else an analytic estimate.

A meter measures the energy of a *window* of work::

    window = meter.start()
    ...                       # the work
    reading = window.stop()   # EnergyReading(joules, seconds, source, method)

Meters (each value carries its source, so an estimate is never mistaken for a measurement):

- :class:`NVMLMeter` (``measured-nvml``): NVIDIA GPUs through ``nvidia-ml-py`` (module
  ``pynvml``). The total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``, mJ since the
  driver loaded) read at both ends of the window, each end on an update of the counter (it moves
  in steps); where a GPU does not support the counter (before Volta), its power (``nvmlDeviceGetPowerUsage``, mW) polled by a thread and integrated
  over the window (trapezoids). The GPU is the one the trial was given: see
  :func:`trial_gpu_ids`.
- :class:`RAPLMeter` (``measured-rapl``): Intel/AMD RAPL through ``/sys/class/powercap``: the
  ``energy_uj`` counters of the CPU packages (and their DRAM domains), with wrap-around at
  ``max_energy_range_uj``; a thread samples them every ``poll_interval_s`` so that a long window
  survives several wraps. RAPL measures whole packages: on a shared machine the reading includes
  other processes' work.
- Neither available: :func:`make_energy_meter` returns ``None`` with the reason, and the caller
  uses the analytic model (:func:`estimate_energy`, :func:`estimate_training_energy`), tagged
  ``estimated``. A meter that reads 0 J or less over a window is not trusted either.

Every reading includes the device's idle power during the window: it is the energy the device
drew, not an attribution to the network alone (on a large GPU the static power dominates, so the
total grows with the window's length more than with the network). :func:`measure_idle` reads the
same meter over a short window with no work queued, and :func:`energy_above_idle` subtracts that
idle power times the window's length: the energy above idle (``energy_dynamic``).

The analytic model (:class:`EnergyCoefficients`) counts compute and data movement with
per-operation energies from Horowitz (ISSCC 2014); it has no time term. Nothing here imports
torch or Ray.
"""

from __future__ import annotations

import importlib
import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SOURCE_NVML = "measured-nvml"
SOURCE_RAPL = "measured-rapl"
SOURCE_ESTIMATED = "estimated"
METER_KINDS = ("auto", "nvml", "rapl", "estimate")
POWERCAP_ROOT = "/sys/class/powercap"


class EnergyUnavailable(RuntimeError):
    """This meter cannot measure here; the message says why."""


# ---------------------------------------------------------------------- analytic model
# Energies per operation at 45 nm, 0.9 V, from M. Horowitz, "1.1 Computing's energy problem (and
# what we can do about it)", ISSCC 2014, pp. 10-14, doi:10.1109/ISSCC.2014.6757323 (its energy
# table): 32-bit float multiply 3.7 pJ, 32-bit float add 0.9 pJ, a 64-bit read of an 8 KB SRAM
# cache 10 pJ (5 pJ per 32-bit word), a 64-bit DRAM access 1.3-2.6 nJ (640 pJ per 32-bit word,
# as tabulated from the same source by Han et al., "Learning both weights and connections for
# efficient neural networks", NeurIPS 2015, Table 1).
HOROWITZ_2014 = {
    "fp32_mult_pj": 3.7,
    "fp32_add_pj": 0.9,
    "sram_8kb_32bit_read_pj": 5.0,
    "dram_32bit_read_pj": 640.0,
}


@dataclass(frozen=True)
class EnergyCoefficients:
    """Coefficients of the analytic model (:func:`estimate_energy`, source ``estimated``).

    The model counts compute and data movement only, never time, so it does not depend on a
    measured latency: energy = MACs x ``pj_per_mac`` + weight bytes x ``pj_per_weight_byte``
    + activation bytes x ``pj_per_activation_byte``. Defaults (``HOROWITZ_2014``, 45 nm):

    - ``pj_per_mac`` 4.6 pJ: a 32-bit float multiply (3.7 pJ) and add (0.9 pJ);
    - ``pj_per_weight_byte`` 160 pJ: weights come from DRAM, 640 pJ per 32-bit word;
    - ``pj_per_activation_byte`` 1.25 pJ: activations stay on chip, an 8 KB SRAM read of 5 pJ
      per 32-bit word;
    - ``bytes_per_value`` 4 (float32; 1 for int8 weights and activations).

    The model has no static (idle) power: it estimates the energy above idle, the quantity
    ``energy_dynamic`` measures, and is an order-of-magnitude model of a 45 nm accelerator, not
    a calibration of any device.
    """

    pj_per_mac: float = HOROWITZ_2014["fp32_mult_pj"] + HOROWITZ_2014["fp32_add_pj"]
    pj_per_weight_byte: float = HOROWITZ_2014["dram_32bit_read_pj"] / 4
    pj_per_activation_byte: float = HOROWITZ_2014["sram_8kb_32bit_read_pj"] / 4
    bytes_per_value: float = 4.0

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ValueError(f"EnergyCoefficients.{name}={value!r} must be a number >= 0")

    @classmethod
    def of(
        cls, coefficients: EnergyCoefficients | Mapping[str, float] | None, where: str = "energy"
    ) -> EnergyCoefficients:
        """``coefficients`` as an instance: ``None`` gives the defaults, a dict its fields."""
        if coefficients is None:
            return cls()
        if isinstance(coefficients, EnergyCoefficients):
            return coefficients
        allowed = sorted(cls.__dataclass_fields__)
        unknown = set(coefficients) - set(allowed)
        if unknown:
            raise ValueError(
                f"{where} coefficients: unknown fields {sorted(unknown)} (allowed: {allowed})"
            )
        return cls(**coefficients)


def estimate_energy(
    macs_m: float,
    weights_m: float,
    activations_m: float,
    coefficients: EnergyCoefficients | Mapping[str, float] | None = None,
) -> float:
    """Estimated energy of one inference, in millijoules (source: ``estimated``).

    ``E = macs * pj_per_mac + (weights * pj_per_weight_byte + activations *
    pj_per_activation_byte) * bytes_per_value``, each count in millions (1 M x 1 pJ = 1e-3 mJ).
    Counts come from :func:`paretune.objectives.measure.count_energy_inputs`: MACs from torch's
    FLOP counter, weights = parameters and floating-point buffers, activations = the input and
    output tensors of every leaf module. No term depends on time.

    Args:
        macs_m: multiply-adds, millions.
        weights_m: weight values read from memory (once per batch), millions.
        activations_m: activation values moved, millions.
        coefficients: an :class:`EnergyCoefficients`, a dict of its fields, or ``None`` for the
            defaults.
    """
    c = EnergyCoefficients.of(coefficients)
    moved_pj = (
        weights_m * c.pj_per_weight_byte + activations_m * c.pj_per_activation_byte
    ) * c.bytes_per_value
    return (macs_m * c.pj_per_mac + moved_pj) * 1e-3


def estimate_training_energy(
    macs_m: float,
    weights_m: float,
    activations_m: float,
    samples: int,
    steps: int,
    coefficients: EnergyCoefficients | Mapping[str, float] | None = None,
) -> float:
    """Estimated energy of a training run, in joules (source: ``estimated``).

    A training step costs about 3 forward passes per sample (forward, and backward for
    activations and weights) of multiply-adds and activation traffic, and moves the weights 3
    times per step (forward read, backward read, update)::

        E = 3 * samples * (macs * pj_per_mac + activations * pj_per_activation_byte * B)
          + 3 * steps * weights * pj_per_weight_byte * B          (B = bytes_per_value)

    Args:
        macs_m: multiply-adds of one forward pass at batch 1, millions.
        weights_m: weight values, millions.
        activations_m: activation values moved by one forward pass at batch 1, millions.
        samples: training samples processed (all epochs).
        steps: optimiser steps.
        coefficients: as for :func:`estimate_energy`.
    """
    c = EnergyCoefficients.of(coefficients)
    per_sample_pj = macs_m * c.pj_per_mac + activations_m * c.pj_per_activation_byte * (
        c.bytes_per_value
    )
    per_step_pj = weights_m * c.pj_per_weight_byte * c.bytes_per_value
    return 3.0 * (samples * per_sample_pj + steps * per_step_pj) * 1e6 * 1e-12


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


# ---------------------------------------------------------------------- NVML
def trial_gpu_ids(
    cuda_index: int | None = 0,
    *,
    environ: Mapping[str, str] | None = None,
    gpu_ids: Sequence[int | str] | None = None,
    uuid_of: Callable[[int], str | None] | None = None,
) -> list[str]:
    """NVML identifiers of the GPUs a trial uses: a ``GPU-<uuid>`` or a physical index.

    NVML numbers every GPU of the machine, whatever ``CUDA_VISIBLE_DEVICES`` says, while CUDA
    (and torch) number only the visible ones. In order of reliability:

    1. ``uuid_of(cuda_index)``: the UUID torch reports for ``cuda:<cuda_index>`` (exact).
    2. Entry ``cuda_index`` of ``CUDA_VISIBLE_DEVICES`` (Ray sets it to the GPUs it gave the
       trial): a ``GPU-``/``MIG-`` UUID as is, or an integer, which is the NVML index when
       ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` or the GPUs are all the same model.
    3. ``gpu_ids`` (``ray.get_gpu_ids()``), read the same way.
    4. ``cuda_index`` itself (nothing hides GPUs).

    Args:
        cuda_index: the CUDA device the trial runs on; ``None``: every visible GPU.
        environ: the environment (default ``os.environ``).
        gpu_ids: the GPU ids Ray assigned, when known.
        uuid_of: maps a CUDA index to its UUID (without or with the ``GPU-`` prefix).
    """
    env = os.environ if environ is None else environ
    if uuid_of is not None and cuda_index is not None:
        uuid = uuid_of(cuda_index)
        if uuid:
            uuid = str(uuid)
            return [uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"]
    entries: list[str] | None = None
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() not in ("", "NoDevFiles"):
        entries = [e.strip() for e in visible.split(",") if e.strip()]
    elif gpu_ids:
        entries = [str(g) for g in gpu_ids]
    if entries is None:
        return [] if cuda_index is None else [str(cuda_index)]
    if cuda_index is None:
        return entries
    if not 0 <= cuda_index < len(entries):
        raise EnergyUnavailable(
            f"cuda:{cuda_index} is not among the {len(entries)} visible GPUs ({entries})"
        )
    return [entries[cuda_index]]


def torch_gpu_uuid(cuda_index: int) -> str | None:
    """The UUID torch reports for ``cuda:<cuda_index>``, or ``None`` (no CUDA, old torch)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    try:
        uuid = getattr(torch.cuda.get_device_properties(cuda_index), "uuid", None)
    except (RuntimeError, AssertionError):
        return None
    return str(uuid) if uuid else None


class NVMLMeter(EnergyMeter):
    """Energy of NVIDIA GPUs from NVML.

    Args:
        devices: NVML identifiers (physical indices or ``GPU-<uuid>``); default: the trial's GPU
            from :func:`trial_gpu_ids`. Several GPUs are summed.
        nvml: the NVML module (default: ``import pynvml`` from ``nvidia-ml-py``); tests pass a
            fake here.
        power_poll_s: power sampling interval where the energy counter is unsupported.
        force_polling: integrate polled power even where the counter works.
        align_s: the driver updates the energy counter in steps (tens of ms apart), so a window
            read at arbitrary times is off by up to a step at each end. With ``align_s > 0`` a
            window starts and ends on an update: ``start`` and ``stop`` poll the counter
            (every ``align_poll_s``) until it changes, waiting ``align_s`` at most. Window and
            counter then cover the same time, whatever the step; the total includes up to one
            step of the time after the work. ``0``: read at once.
        align_poll_s: polling interval while aligning.

    Raises:
        EnergyUnavailable: NVML cannot be loaded or initialised, a GPU cannot be opened, or a
            GPU supports neither the energy counter nor power readings.
    """

    source = SOURCE_NVML

    def __init__(
        self,
        devices: Sequence[int | str] | None = None,
        *,
        nvml: Any = None,
        power_poll_s: float = 0.02,
        force_polling: bool = False,
        align_s: float = 0.25,
        align_poll_s: float = 0.0005,
    ) -> None:
        if not (align_s >= 0 and align_poll_s > 0):
            raise ValueError(
                f"NVMLMeter: align_s={align_s!r} must be >= 0 and align_poll_s={align_poll_s!r} > 0"
            )
        self.align_s = float(align_s)
        self.align_poll_s = float(align_poll_s)
        if nvml is None:
            try:
                nvml = importlib.import_module("pynvml")
            except ImportError as exc:
                raise EnergyUnavailable(
                    f"NVML: the nvidia-ml-py package is not installed ({exc})"
                ) from None
        self.nvml = nvml
        error = getattr(nvml, "NVMLError", Exception)
        try:
            nvml.nvmlInit()
        except error as exc:
            raise EnergyUnavailable(f"NVML: cannot initialise ({exc})") from None
        ids = [str(d) for d in devices] if devices is not None else None
        if ids is None:
            ids = trial_gpu_ids(0, uuid_of=torch_gpu_uuid)
        if not ids:
            raise EnergyUnavailable("NVML: no GPU to measure")
        self.device_ids = ids
        self.handles = []
        for ident in ids:
            try:
                if ident.startswith(("GPU-", "MIG-")):
                    handle = nvml.nvmlDeviceGetHandleByUUID(ident)
                else:
                    handle = nvml.nvmlDeviceGetHandleByIndex(int(ident))
            except (error, ValueError) as exc:
                raise EnergyUnavailable(f"NVML: cannot open GPU {ident!r} ({exc})") from None
            self.handles.append(handle)
        self.counter = not force_polling
        if self.counter:
            try:
                for h in self.handles:
                    nvml.nvmlDeviceGetTotalEnergyConsumption(h)
            except error:
                self.counter = False
        if not self.counter:
            try:
                for h in self.handles:
                    nvml.nvmlDeviceGetPowerUsage(h)
            except error as exc:
                raise EnergyUnavailable(
                    f"NVML: GPU {ids} supports neither the energy counter nor power readings ({exc})"
                ) from None
            if not power_poll_s > 0:
                raise ValueError(f"NVMLMeter: power_poll_s={power_poll_s!r} must be > 0")
            self.poll_interval_s = float(power_poll_s)
        self.method = "nvml-energy-counter" if self.counter else "nvml-power-polling"

    def describe(self) -> str:
        return f"NVML {self.method} on GPU {', '.join(self.device_ids)}"

    def _counter_mj(self) -> list[float]:
        return [float(self.nvml.nvmlDeviceGetTotalEnergyConsumption(h)) for h in self.handles]

    def _power_w(self) -> float:
        return sum(float(self.nvml.nvmlDeviceGetPowerUsage(h)) for h in self.handles) / 1e3

    def _next_update(self) -> list[float]:
        """The counters at their next update (or after ``align_s``, or at once when 0)."""
        before = self._counter_mj()
        if self.align_s <= 0:
            return before
        deadline = time.perf_counter() + self.align_s
        while True:
            time.sleep(self.align_poll_s)
            now = self._counter_mj()
            if now != before or time.perf_counter() >= deadline:
                return now

    def _begin(self) -> dict[str, Any]:
        if self.counter:
            start = self._next_update()
            return {"start": start, "last": list(start), "samples": 1}
        return {"t": time.perf_counter(), "p": self._power_w(), "joules": 0.0, "samples": 1}

    def _sample(self, state: dict[str, Any]) -> None:
        state["samples"] += 1
        if self.counter:
            state["last"] = self._counter_mj()
            return
        now, power = time.perf_counter(), self._power_w()
        state["joules"] += 0.5 * (power + state["p"]) * (now - state["t"])
        state["t"], state["p"] = now, power

    def _finish(self, state: dict[str, Any]) -> None:
        if self.counter:
            state["samples"] += 1
            state["last"] = self._next_update()
        else:
            self._sample(state)

    def _reading(self, state: dict[str, Any], seconds: float) -> EnergyReading:
        if self.counter:
            mj = sum(b - a for a, b in zip(state["start"], state["last"], strict=True))
            joules = mj / 1e3
        else:
            joules = state["joules"]
        return EnergyReading(joules, seconds, self.source, self.method, state["samples"])


# ---------------------------------------------------------------------- RAPL
_ZONE = re.compile(r"^intel-rapl:(\d+)$")
_SUBZONE = re.compile(r"^intel-rapl:(\d+):(\d+)$")


@dataclass(frozen=True)
class RaplZone:
    """One powercap domain: its folder, name and counter range (µJ)."""

    path: Path
    name: str
    max_range_uj: int

    def read_uj(self) -> int:
        return int((self.path / "energy_uj").read_text().strip())


def rapl_zones(
    root: str | os.PathLike = POWERCAP_ROOT, include_dram: bool = True
) -> list[RaplZone]:
    """The readable RAPL zones under ``root``: every package (``intel-rapl:N``, not ``psys``,
    which covers the packages again) and, with ``include_dram``, their ``dram`` subzones (which
    the package counter does not include).

    Raises:
        EnergyUnavailable: no zone, or the counters cannot be read (on recent kernels
            ``energy_uj`` is readable by root only).
    """
    base = Path(root)
    if not base.is_dir():
        raise EnergyUnavailable(f"RAPL: {str(base)!r} does not exist (no powercap interface)")
    zones: list[RaplZone] = []
    problems: list[str] = []
    for entry in sorted(base.iterdir()):
        top, sub = _ZONE.match(entry.name), _SUBZONE.match(entry.name)
        if not (top or sub):
            continue
        try:
            name = (entry / "name").read_text().strip()
        except OSError as exc:
            problems.append(f"{entry.name}/name: {exc.strerror or exc}")
            continue
        if top and name == "psys":
            continue
        if sub and not (include_dram and name == "dram"):
            continue
        try:
            max_range = int((entry / "max_energy_range_uj").read_text().strip())
            zone = RaplZone(entry, name, max_range)
            zone.read_uj()
        except (OSError, ValueError) as exc:
            problems.append(f"{entry.name}/energy_uj: {getattr(exc, 'strerror', None) or exc}")
            continue
        zones.append(zone)
    if not zones:
        why = "; ".join(problems) if problems else "no intel-rapl zone"
        raise EnergyUnavailable(f"RAPL: nothing readable under {str(base)!r} ({why})")
    return zones


class RAPLMeter(EnergyMeter):
    """Energy of the CPU packages (and DRAM) from RAPL counters under ``/sys/class/powercap``.

    Args:
        root: the powercap folder (tests use a fake tree).
        include_dram: add the ``dram`` subzones.
        poll_interval_s: how often a thread reads the counters while a window is open, so that
            wrap-arounds are counted even when a window spans several (a counter wraps after
            ``max_energy_range_uj``, about an hour at 70 W).

    Raises:
        EnergyUnavailable: see :func:`rapl_zones`.
    """

    source = SOURCE_RAPL
    method = "rapl-counter"

    def __init__(
        self,
        root: str | os.PathLike = POWERCAP_ROOT,
        *,
        include_dram: bool = True,
        poll_interval_s: float = 5.0,
    ) -> None:
        if not poll_interval_s > 0:
            raise ValueError(f"RAPLMeter: poll_interval_s={poll_interval_s!r} must be > 0")
        self.root = Path(root)
        self.zones = rapl_zones(root, include_dram)
        self.poll_interval_s = float(poll_interval_s)

    def describe(self) -> str:
        return f"RAPL on {', '.join(z.path.name + ' (' + z.name + ')' for z in self.zones)}"

    def _begin(self) -> dict[str, Any]:
        return {"last": [z.read_uj() for z in self.zones], "uj": 0, "samples": 1}

    def _sample(self, state: dict[str, Any]) -> None:
        now = [z.read_uj() for z in self.zones]
        for k, (zone, before, after) in enumerate(zip(self.zones, state["last"], now, strict=True)):
            delta = after - before
            if delta < 0:  # the counter wrapped around (at most once since the last sample)
                delta += zone.max_range_uj
            state["uj"] += delta
            state["last"][k] = after
        state["samples"] += 1

    def _reading(self, state: dict[str, Any], seconds: float) -> EnergyReading:
        return EnergyReading(state["uj"] / 1e6, seconds, self.source, self.method, state["samples"])


# ---------------------------------------------------------------------- choice
def make_energy_meter(
    kind: str = "auto",
    device: str = "cpu",
    *,
    nvml: Any = None,
    rapl_root: str | os.PathLike = POWERCAP_ROOT,
    gpu_ids: Sequence[int | str] | None = None,
    environ: Mapping[str, str] | None = None,
    uuid_of: Callable[[int], str | None] | None = torch_gpu_uuid,
) -> tuple[EnergyMeter | None, str]:
    """The meter for a trial, or ``None`` and the reason the analytic estimate is used.

    Args:
        kind: ``auto`` (NVML for a CUDA device, RAPL for the CPU), ``nvml``, ``rapl`` or
            ``estimate`` (no meter).
        device: the trial's torch device (``cpu``, ``cuda``, ``cuda:1``). Only a CUDA device
            asks torch for its GPU's UUID; ``nvml`` with ``cpu`` measures the first visible GPU.
        nvml: an NVML module to use instead of ``pynvml`` (tests).
        rapl_root: the powercap folder.
        gpu_ids: ``ray.get_gpu_ids()`` when known (see :func:`trial_gpu_ids`).
        environ: the environment for :func:`trial_gpu_ids` (default ``os.environ``).
        uuid_of: maps a CUDA index to its UUID (default: torch's); ``None``: do not ask.
    """
    if kind not in METER_KINDS:
        raise ValueError(f"energy meter {kind!r} is unknown (allowed: {list(METER_KINDS)})")
    if kind == "estimate":
        return None, "energy_meter = 'estimate'"
    dev = str(device)
    is_cuda = dev.startswith("cuda")
    if kind == "nvml" or (kind == "auto" and is_cuda):
        index = int(dev.partition(":")[2] or 0) if is_cuda else 0
        try:
            ids = trial_gpu_ids(
                index, environ=environ, gpu_ids=gpu_ids, uuid_of=uuid_of if is_cuda else None
            )
            return NVMLMeter(ids, nvml=nvml), ""
        except EnergyUnavailable as exc:
            return None, str(exc)
    try:
        return RAPLMeter(rapl_root), ""
    except EnergyUnavailable as exc:
        return None, str(exc)


def finite_positive(value: float) -> bool:
    """True for a finite number > 0 (a usable energy)."""
    return isinstance(value, int | float) and math.isfinite(value) and value > 0
