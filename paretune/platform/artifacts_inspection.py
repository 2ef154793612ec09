"""The search engine's inspection tables: heatmaps, CSV files and the saved searcher state."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from paretune.search_algos.base import InspectionTable


# ---------------------------------------------------------------------- engine inspection
SEARCHER_ARTIFACTS = "searcher"


def inspection_heatmap(table: InspectionTable) -> Figure:
    """A heat map of ``table``: one row per ``heatmap[0]`` key, one column per ``heatmap[1]``.

    Each column has its own colour scale (objectives differ in units), so colours compare rows
    within a column; the numbers are printed in the cells. NaN cells (never observed) are grey.
    """
    import numpy as np
    from matplotlib.figure import Figure

    assert table.heatmap is not None
    keys, columns = table.heatmap
    labels = [":".join(str(r[k]) for k in keys) for r in table.rows]
    values = np.array([[float(r[c]) for c in columns] for r in table.rows], dtype=float)
    shown = np.full_like(values, np.nan)
    for j in range(values.shape[1]):  # per-column min-max scale
        col = values[:, j]
        ok = np.isfinite(col)
        if ok.any():
            lo, hi = col[ok].min(), col[ok].max()
            shown[ok, j] = (col[ok] - lo) / (hi - lo) if hi > lo else 0.5
    height = max(2.5, 0.22 * len(labels) + 1.2)
    fig = Figure(figsize=(1.3 * len(columns) + 3.0, height), dpi=90)
    ax = fig.add_subplot()
    cmap = _heatmap_cmap(table.colormap)
    ax.imshow(np.ma.masked_invalid(shown), aspect="auto", cmap=cmap, vmin=0, vmax=1)
    ax.set_xticks(range(len(columns)), list(columns), rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            ax.text(
                j,
                i,
                "-" if not np.isfinite(v) else f"{v:.3g}",
                ha="center",
                va="center",
                fontsize=6.5,
            )
    ax.set_title(table.title or table.name, fontsize=9)
    fig.tight_layout()
    return fig


def _heatmap_cmap(name: str) -> Any:
    import matplotlib

    return matplotlib.colormaps[name].with_extremes(bad="0.85")


def write_inspection_tables(tables: Sequence[InspectionTable], folder: str | Path) -> list[Path]:
    """Write each table as ``<name>.csv`` (and ``<name>.png`` with a heat map); returns the files."""
    import pandas as pd

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for table in tables:
        csv = folder / f"{table.name}.csv"
        pd.DataFrame(table.rows, columns=list(table.columns) or None).to_csv(csv, index=False)
        files.append(csv)
        if table.heatmap is not None and table.rows:
            png = folder / f"{table.name}.png"
            inspection_heatmap(table).savefig(png)
            files.append(png)
    return files


def searcher_state_from_dir(experiment_dir: str | Path) -> dict[str, Any] | None:
    """The searcher's last saved state in a Ray experiment directory, when it is JSON.

    Ray saves the searcher as ``searcher-state-<time>.pkl``; ``ParetoSearcher`` writes JSON
    there, Ray's ``OptunaSearch`` a pickle (not read: ``None``). Works after a resume too, where
    the driver holds no reference to the restored searcher.
    """
    # Newest driver session by name (its start time): Ray's staging sync touches older files.
    files = sorted(Path(experiment_dir).glob("searcher-state-*.pkl"), key=lambda p: p.name)
    if not files:
        return None
    try:
        state = json.loads(files[-1].read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return state if isinstance(state, dict) else None
