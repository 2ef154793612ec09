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

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from paretune.objectives.energy_meter import (
    METER_KINDS,
    POWERCAP_ROOT,
    SOURCE_ESTIMATED,
    SOURCE_NVML,
    SOURCE_RAPL,
    EnergyMeter,
    EnergyReading,
    EnergyUnavailable,
    EnergyWindow,
    energy_above_idle,
    finite_positive,
    measure_idle,
)
from paretune.objectives.energy_model import (
    HOROWITZ_2014,
    EnergyCoefficients,
    estimate_energy,
    estimate_training_energy,
)
from paretune.objectives.energy_nvml import NVMLMeter, torch_gpu_uuid, trial_gpu_ids
from paretune.objectives.energy_rapl import RAPLMeter, RaplZone, rapl_zones


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


__all__ = [
    "EnergyCoefficients",
    "EnergyMeter",
    "EnergyReading",
    "EnergyUnavailable",
    "EnergyWindow",
    "HOROWITZ_2014",
    "METER_KINDS",
    "NVMLMeter",
    "POWERCAP_ROOT",
    "RAPLMeter",
    "RaplZone",
    "SOURCE_ESTIMATED",
    "SOURCE_NVML",
    "SOURCE_RAPL",
    "energy_above_idle",
    "estimate_energy",
    "estimate_training_energy",
    "finite_positive",
    "make_energy_meter",
    "measure_idle",
    "rapl_zones",
    "torch_gpu_uuid",
    "trial_gpu_ids",
]
