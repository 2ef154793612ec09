"""Deliberate failures for the platform tests, through ``run(config, evaluator_wrapper=...)``.

``Faults(...)`` wraps each trial's evaluator: chosen architectures (a hash of seed and
architecture) raise, report NaN or allocate memory until the OOM guard stops the trial;
``delay_s`` makes every trial slow. Production code has no fault injection.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path
from typing import Any

from ray import cloudpickle

from paretune.spaces import NB201Space

FAULT_MARKER = ".fault"  # in a trial's folder: its transient fault already happened


class InjectedFault(RuntimeError):
    """A failure injected on purpose by :class:`Faults`."""


class Faults:
    """An ``evaluator_wrapper``: the wrapped evaluator fails as set here (all 0: never)."""

    def __init__(
        self,
        raise_rate: float = 0.0,
        nan_rate: float = 0.0,
        memory_rate: float = 0.0,
        transient: bool = False,
        delay_s: float = 0.0,
        seed: int = 0,
    ) -> None:
        if raise_rate + nan_rate + memory_rate > 1:
            raise ValueError("raise_rate + nan_rate + memory_rate must be at most 1")
        self.rates = (("raise", raise_rate), ("nan", nan_rate), ("memory", memory_rate))
        self.transient = transient
        self.delay_s = delay_s
        self.seed = seed

    def __call__(self, evaluator: Any) -> Any:
        return FaultyEvaluator(evaluator, self)

    def fault_for(self, arch: str) -> str | None:
        digest = hashlib.sha256(f"{self.seed}:{arch}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        edge = 0.0
        for name, rate in self.rates:
            edge += rate
            if u < edge:
                return name
        return None


class FaultyEvaluator:
    """``inner`` with the faults of ``faults`` (see :class:`Faults`)."""

    def __init__(self, inner: Any, faults: Faults) -> None:
        self.inner = inner
        self.faults = faults

    def metrics(self) -> Any:
        return self.inner.metrics()

    def evaluate(self, arch: Any, report: Any = None, **context: Any) -> Any:
        if self.faults.delay_s:
            time.sleep(self.faults.delay_s)
        arch_text = NB201Space().encode(arch)
        fault = self.faults.fault_for(arch_text)
        trial_dir = context.get("trial_dir")
        if fault is not None and self.faults.transient and trial_dir:
            marker = Path(trial_dir) / FAULT_MARKER  # shared by every attempt of the trial
            if marker.exists():
                fault = None  # a retry of a transient fault succeeds
            else:
                marker.touch()
        if fault == "raise":
            raise InjectedFault(f"injected failure for {arch_text}")
        if fault == "memory":
            hog = []
            while True:  # until the guard (or Ray's memory monitor) stops the trial
                hog.append(bytearray(16 * 2**20))
        evaluation = self.inner.evaluate(arch, report, **context)
        if fault == "nan":
            for name in evaluation.values:
                evaluation.values[name] = float("nan")
        return evaluation


# Ray's workers need not find this test module on their path: send it by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])
