"""Analytic energy model: per-operation energies (Horowitz, ISSCC 2014), no time term."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

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
