"""RAPL meter of the CPU packages (and DRAM) from the powercap counters."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paretune.objectives.energy_meter import (
    POWERCAP_ROOT,
    SOURCE_RAPL,
    EnergyMeter,
    EnergyReading,
    EnergyUnavailable,
)

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
