"""Reading the NAS-Bench-201 table (with HW-NAS-Bench / HELP hardware columns) from a path.

The table is not part of paretune: it is read from the path given in the config, else from the
environment variable ``PARETUNE_NB201`` (a CSV file, or a folder holding ``nb201.csv.gz``), else
from the cache that ``paretune data build nb201`` fills (:mod:`.benchmark_data`).
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
    """The table file: ``path`` (a file or a folder), else ``$PARETUNE_NB201``, else the cache
    (``$PARETUNE_DATA/benchmarks/nb201/``, default ``~/.cache/paretune/benchmarks/nb201/``).

    A path given (in the config or the variable) that does not hold the table is an error
    naming it; with none given and no cached table, one line names all three places and the
    command that builds the table.

    Raises:
        FileNotFoundError: the table is not where it was looked for.
    """
    from paretune.objectives.benchmark_data import BUILD_COMMAND, cached_nb201

    if path is not None and str(path) != "":
        return _table_file(Path(path).expanduser(), "evaluator.path")
    env = os.environ.get(ENV_VAR)
    if env:
        return _table_file(Path(env).expanduser(), ENV_VAR)
    cached = cached_nb201()
    if cached.is_file():
        return cached
    raise FileNotFoundError(
        f"no NAS-Bench-201 table: evaluator.path is not set, {ENV_VAR} is not set and the cache "
        f"has none ({cached}); build it with `{BUILD_COMMAND}` (or point evaluator.path or "
        f"{ENV_VAR} at {TABLE_FILE} or its folder)"
    )


def _table_file(p: Path, where: str) -> Path:
    file = p / TABLE_FILE if p.is_dir() else p
    if not file.is_file():
        named = f"{where} = {str(p)!r}: " if where != "evaluator.path" else ""
        raise FileNotFoundError(
            f"{named}no NAS-Bench-201 table at {str(file)!r} (expected {TABLE_FILE} or its "
            f"folder; `paretune data build nb201` builds one into the cache)"
        )
    return file


@functools.lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, index_col="index")
    except (ValueError, OSError, UnicodeDecodeError, EOFError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"{path}: not the NAS-Bench-201 table (a CSV, optionally gzip, with 'index' and "
            f"'arch' columns; {first})"
        ) from None
    if "arch" not in df.columns:
        raise ValueError(f"{path}: not the NAS-Bench-201 table (no 'arch' column)")
    return df.sort_index()


def load_table(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """The NB201 table as a DataFrame indexed by NB201 index (cached per process)."""
    p = resolve_table_path(path)
    return _load(str(p.resolve()), p.stat().st_mtime)


def latency_devices(df: pd.DataFrame) -> list[str]:
    return sorted(c.removeprefix("latency_ms_") for c in df.columns if c.startswith("latency_ms_"))


def energy_devices(df: pd.DataFrame) -> list[str]:
    return sorted(c.removeprefix("energy_mj_") for c in df.columns if c.startswith("energy_mj_"))
