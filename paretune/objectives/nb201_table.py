"""Reading the NAS-Bench-201 table (with HW-NAS-Bench / HELP hardware columns) from a path.

The table is not part of paretune: it is read from the path given in the config, or from the
environment variable ``PARETUNE_NB201`` (a CSV file, or a folder holding ``nb201.csv.gz``).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pandas as pd

ENV_VAR = "PARETUNE_NB201"
TABLE_FILE = "nb201.csv.gz"
DATASETS = ("cifar10", "cifar100", "imagenet16")
FIDELITIES = (12, 200)


def resolve_table_path(path: str | os.PathLike | None = None) -> Path:
    """The table file for ``path`` (a file or a folder), else ``$PARETUNE_NB201``.

    Raises ``FileNotFoundError`` saying where it looked and how to point at the data.
    """
    given = path if path is not None else os.environ.get(ENV_VAR)
    if not given:
        raise FileNotFoundError(
            f"no NAS-Bench-201 table configured: set evaluator.path or the environment variable {ENV_VAR} "
            f"to the file {TABLE_FILE} (or its folder), e.g. ../shared/benchmarks/nb201"
        )
    p = Path(given).expanduser()
    if p.is_dir():
        p = p / TABLE_FILE
    if not p.is_file():
        raise FileNotFoundError(
            f"NAS-Bench-201 table not found: {str(p)!r} (set evaluator.path or {ENV_VAR})"
        )
    return p


@functools.lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> pd.DataFrame:
    df = pd.read_csv(path, index_col="index")
    if "arch" not in df.columns:
        raise ValueError(f"{path}: not an NB201 table (no 'arch' column)")
    return df.sort_index()


def load_table(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """The NB201 table as a DataFrame indexed by NB201 index (cached per process)."""
    p = resolve_table_path(path)
    return _load(str(p.resolve()), p.stat().st_mtime)


def latency_devices(df: pd.DataFrame) -> list[str]:
    return sorted(c.removeprefix("latency_ms_") for c in df.columns if c.startswith("latency_ms_"))


def energy_devices(df: pd.DataFrame) -> list[str]:
    return sorted(c.removeprefix("energy_mj_") for c in df.columns if c.startswith("energy_mj_"))
