"""Shared fixtures. Tests that need the NB201 table find it through $PARETUNE_NB201."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NB201_HINT = (
    "needs the NAS-Bench-201 table: set PARETUNE_NB201 to its folder, "
    "e.g. PARETUNE_NB201=../shared/benchmarks/nb201 (.ci/run sets it)"
)


@pytest.fixture(scope="session")
def nb201_path() -> Path:
    """Path of the NB201 table file; skips (saying how to point at it) when not configured."""
    value = os.environ.get("PARETUNE_NB201")
    if not value:
        pytest.skip(NB201_HINT)
    p = Path(value).resolve()  # tests also run subprocesses in other folders
    if p.is_dir():
        p = p / "nb201.csv.gz"
    if not p.is_file():
        pytest.fail(f"PARETUNE_NB201={value!r} does not hold nb201.csv.gz")
    return p
