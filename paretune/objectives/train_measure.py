"""Inference energy of a trained network for :class:`~paretune.objectives.train.TrainEvaluator`:
a metered window of inference batches above the idle power, else the analytic model."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from paretune.objectives.data import Dataset
from paretune.objectives.energy import (
    SOURCE_ESTIMATED,
    EnergyMeter,
    EnergyReading,
    energy_above_idle,
    estimate_energy,
    finite_positive,
    measure_idle,
)
from paretune.objectives.measure import (
    EnergyCounts,
)
from paretune.objectives.train_loop import _batch_of, _sync


@torch.no_grad()
def inference_window(
    ev: Any, model: nn.Module, data: Dataset, meter: EnergyMeter
) -> tuple[EnergyReading, EnergyReading | Exception, int]:
    """Energy of ``energy_batches`` inference batches (at least ``energy_min_window_s``),
    the idle reading before them (or why it failed), and the images of the window."""
    dev = ev.device
    x = _batch_of(data.test.x, ev.energy_batch_size).to(dev)
    was_training = model.training
    model.eval()
    try:
        _sync(dev)
        idle: EnergyReading | Exception
        try:
            idle = measure_idle(meter, ev.energy_idle_s)
        except Exception as exc:  # noqa: BLE001 - energy_dynamic then falls back
            idle = exc
        for _ in range(ev.energy_warmup):
            model(x)
        _sync(dev)
        window = meter.start()
        started = time.perf_counter()
        batches = 0
        limit = 1000 * ev.energy_batches
        while batches < ev.energy_batches or (
            time.perf_counter() - started < ev.energy_min_window_s and batches < limit
        ):
            model(x)
            batches += 1
            if batches % 8 == 0:
                _sync(dev)
        _sync(dev)
        reading = window.stop()
    finally:
        model.train(was_training)
    return reading, idle, batches * len(x)


def inference_energy(
    ev: Any, model: nn.Module, data: Dataset, counts: EnergyCounts
) -> tuple[dict[str, float], dict[str, str], dict[str, Any]]:
    """Per-image ``energy`` and ``energy_dynamic`` (mJ), their sources and extras:
    measured when a meter works, else the analytic model."""
    meter, why = ev.meter()
    values: dict[str, float] = {}
    sources: dict[str, str] = {}
    extras: dict[str, Any] = {}
    if meter is not None:
        try:
            reading, idle, images = inference_window(ev, model, data, meter)
        except Exception as exc:  # noqa: BLE001 - a failing meter must not fail the trial
            why = f"{meter.describe()} failed: {type(exc).__name__}: {exc}"
        else:
            images = max(images, 1)
            mj = reading.joules * 1e3 / images
            extras.update(
                energy_window_s=reading.seconds,
                energy_window_images=images,
                energy_window_j=reading.joules,
                energy_method=reading.method,
                energy_meter=meter.describe(),
            )
            if finite_positive(mj):
                values["energy"], sources["energy"] = mj, reading.source
                if isinstance(idle, Exception):
                    extras["energy_dynamic_error"] = (
                        f"idle reading failed: {type(idle).__name__}: {idle}"
                    )
                else:
                    joules, method = energy_above_idle(reading, idle)
                    raw = joules * 1e3 / images
                    values["energy_dynamic"] = max(raw, 0.0)
                    sources["energy_dynamic"] = reading.source
                    extras.update(
                        energy_idle_w=idle.watts,
                        energy_idle_s=idle.seconds,
                        energy_dynamic_raw_mj=raw,
                        energy_dynamic_method=method,
                    )
            else:
                why = f"{meter.describe()} read {reading.joules!r} J over {reading.seconds:.3g} s"
    if "energy_dynamic" not in values:
        # The analytic model, per image of the window's batches: the weights are read once
        # per batch, MACs and activations once per image. It has no idle part.
        mj = estimate_energy(
            counts.macs_m,
            counts.weights_m / ev.energy_batch_size,
            counts.activations_m,
            ev.energy_coefficients,
        )
        if "energy" not in values:
            values["energy"], sources["energy"] = mj, SOURCE_ESTIMATED
            extras["energy_meter_error"] = why
        values["energy_dynamic"], sources["energy_dynamic"] = mj, SOURCE_ESTIMATED
        extras.setdefault("energy_dynamic_method", "analytic model (no idle part)")
    return values, sources, extras
