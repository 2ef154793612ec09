"""What the MLflow UI shows of a search beyond the tracker's metrics.

- :func:`cell_figure`, :func:`log_trial_artifacts`, :func:`log_cell_pictures`: a picture of each
  trial's cell (the NB201 DAG with operation names) as ``cell.png`` in its nested run.
- :func:`log_parent_summary`: the parent run's objectives, searcher, summary metrics, hypervolume
  history, report files (CSV and plots), the searcher's final state and a Markdown description.
- :func:`tag_pareto`: the ``pareto`` tag (``front`` / ``dominated`` / ``failed``) of every trial
  run, so that the filter ``tags.pareto = 'front'`` lists the front.
- :func:`log_front_models`: the trained architectures of the front as MLflow pytorch models
  (``pt2`` format, signature, real input example, optionally registered), from saved weights.

Everything writes through an ``MlflowClient``; nothing here changes MLflow's global state for
longer than one call (:func:`log_front_models` sets the tracking URI for the duration of the
``mlflow.pytorch.log_model`` calls and restores it).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import tempfile
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.figure import Figure
    from mlflow.tracking import MlflowClient
    from torch import nn

    from paretune.platform.config import ExperimentConfig
    from paretune.platform.report import SearchReport, TrialRow
    from paretune.search_algos.base import InspectionTable

logger = logging.getLogger(__name__)

CELL_ARTIFACT = "cell.png"
WEIGHTS_FILE = "weights.pt"
WEIGHTS_META_FILE = "weights.json"
MODEL_NAME = "model"
# Real images in a model's input example: torch.export keeps a batch dimension of 1 static, so
# the example holds two to keep the logged model's batch size free.
EXAMPLE_BATCH = 2
MAX_TAG = 5000

# Operation colours of the cell picture; ``none`` is drawn dashed and faint.
OP_STYLE: dict[str, dict[str, Any]] = {
    "nor_conv_3x3": {"color": "tab:blue"},
    "nor_conv_1x1": {"color": "tab:cyan"},
    "skip_connect": {"color": "tab:green"},
    "avg_pool_3x3": {"color": "tab:orange"},
    "none": {"color": "0.7", "linestyle": (0, (3, 3))},
}
# Where each edge of the NB201 cell is drawn: arc curvature (0 = straight; <0 above, >0 below).
_EDGE_RAD: dict[tuple[int, int], float] = {
    (0, 1): 0.0,
    (1, 2): 0.0,
    (2, 3): 0.0,
    (0, 2): -0.45,
    (1, 3): -0.45,
    (0, 3): 0.4,
}


# ---------------------------------------------------------------------- cell pictures
def cell_edges(arch_str: str) -> list[tuple[int, int, str]]:
    """The edges ``(src, dst, operation)`` of an NB201 architecture string, in standard order.

    Raises:
        ValueError: ``arch_str`` is not an NB201 string.
    """
    from paretune.spaces.nb201 import NB201_EDGES, NB201_OPS, NB201Space

    arch = NB201Space().decode(arch_str)
    return [(s, d, NB201_OPS[i]) for (s, d), i in zip(NB201_EDGES, arch, strict=True)]


def cell_figure(arch_str: str, *, title: str | None = None) -> Figure:
    """The NB201 cell of ``arch_str`` as a DAG: nodes 0..3, edges labelled with their operation.

    ``none`` edges are drawn dashed and faint (they carry no signal). The figure is a plain
    ``matplotlib.figure.Figure`` (no pyplot state), ready for ``savefig`` or
    ``MlflowClient.log_figure``.

    Args:
        arch_str: an NB201 architecture string, e.g. ``|nor_conv_3x3~0|+|...|+|...|``.
        title: the title; defaults to the architecture string, one node per line.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle, FancyArrowPatch

    if arch_str.lstrip().startswith("Genotype("):
        return darts_cell_figure(arch_str, title=title)
    if not arch_str.startswith("|"):
        return decisions_figure(arch_str, title=title)
    edges = cell_edges(arch_str)
    gap, radius = 1.5, 0.22  # distance between nodes, node radius (data units)
    fig = Figure(figsize=(6.4, 3.3), dpi=90)
    ax = fig.add_axes((0.01, 0.0, 0.98, 0.8))
    ax.set_xlim(-0.4, 3 * gap + 0.4)
    ax.set_ylim(-0.95, 0.8)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.apply_aspect()
    x0, x1 = ax.transData.transform([(0, 0), (1, 0)])[:, 0]
    shrink = radius * (x1 - x0) * 72 / fig.dpi + 1.5  # node radius in points
    # add_artist, not add_patch: the limits are set, and add_patch's autoscaling bookkeeping
    # (the arrows' paths in display space) was a fifth of the drawing time.
    for n in range(4):
        ax.add_artist(
            Circle((n * gap, 0), radius, facecolor="white", edgecolor="0.2", lw=1.5, zorder=3)
        )
        ax.text(n * gap, 0, str(n), ha="center", va="center", fontsize=11, weight="bold", zorder=4)
        label = {0: "input", 3: "output"}.get(n)
        if label:
            ax.text(n * gap, -radius - 0.06, label, ha="center", va="top", fontsize=8, color="0.35")
    for src, dst, op in edges:
        style = OP_STYLE.get(op, {"color": "k"})
        rad = _EDGE_RAD[(src, dst)]
        ax.add_artist(
            FancyArrowPatch(
                (src * gap, 0),
                (dst * gap, 0),
                connectionstyle=f"arc3,rad={rad}",
                arrowstyle="-|>",
                mutation_scale=13,
                shrinkA=shrink,
                shrinkB=shrink,
                lw=2.0 if op != "none" else 1.2,
                zorder=2,
                **style,
            )
        )
        # The middle of matplotlib's arc3 Bezier: the chord's middle + rad/2 * (dy, -dx).
        mx = (src + dst) * gap / 2
        my = -rad * (dst - src) * gap / 2 if rad else 0.0
        ax.text(
            mx,
            my,
            op,
            ha="center",
            va="center",
            fontsize=8,
            color=style["color"] if op != "none" else "0.45",
            zorder=5,
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.95},
        )
    text = title if title is not None else "\n".join(arch_str.split("+"))
    fig.text(0.5, 0.97, text, ha="center", va="top", fontsize=7.5, family="monospace")
    return fig


_DARTS_STYLE: dict[str, dict[str, Any]] = {
    "sep_conv_3x3": {"color": "tab:blue"},
    "sep_conv_5x5": {"color": "tab:purple"},
    "dil_conv_3x3": {"color": "tab:cyan"},
    "dil_conv_5x5": {"color": "tab:olive"},
    "skip_connect": {"color": "tab:green"},
    "avg_pool_3x3": {"color": "tab:orange"},
    "max_pool_3x3": {"color": "tab:red"},
    "none": {"color": "0.7", "linestyle": (0, (3, 3))},
}


def darts_cell_figure(arch_str: str, *, title: str | None = None) -> Figure:
    """The normal and reduction cells of a DARTS ``Genotype(...)`` string, one row each:
    states 0 and 1 (the cell's inputs) and nodes 2..5 (concatenated into the output), each
    chosen edge an arc labelled with its operation.

    Raises:
        ValueError: ``arch_str`` is not a DARTS genotype.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle, FancyArrowPatch

    from paretune.spaces.darts import DartsSpace

    space = DartsSpace()
    graphs = space.cell_graphs(space.decode(arch_str))
    gap, radius = 1.3, 0.2
    fig = Figure(figsize=(7.2, 5.4), dpi=90)
    for row, (cell, edges) in enumerate(graphs.items()):
        ax = fig.add_axes((0.01, 0.5 - 0.48 * row, 0.98, 0.42))
        ax.set_xlim(-0.5, 5 * gap + 0.5)
        ax.set_ylim(-1.75, 1.75)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.apply_aspect()
        x0, x1 = ax.transData.transform([(0, 0), (1, 0)])[:, 0]
        shrink = radius * (x1 - x0) * 72 / fig.dpi + 1.5
        ax.text(-0.5, 1.6, f"{cell} cell (output: concat of 2-5)", fontsize=9, weight="bold")
        for n in range(6):
            ax.add_artist(
                Circle((n * gap, 0), radius, facecolor="white", edgecolor="0.2", lw=1.3, zorder=3)
            )
            label = {0: "c[k-2]", 1: "c[k-1]"}.get(n, str(n))
            ax.text(n * gap, 0, label if n > 1 else str(n), ha="center", va="center", zorder=4)
            if n < 2:
                ax.text(n * gap, -radius - 0.05, label, ha="center", va="top", fontsize=7)
        for k, (src, dst, op) in enumerate(edges):
            style = _DARTS_STYLE.get(op, {"color": "k"})
            span = dst - src
            rad = 0.0 if span == 1 else (-0.5 if k % 2 == 0 else 0.5)
            ax.add_artist(
                FancyArrowPatch(
                    (src * gap, 0),
                    (dst * gap, 0),
                    connectionstyle=f"arc3,rad={rad}",
                    arrowstyle="-|>",
                    mutation_scale=11,
                    shrinkA=shrink,
                    shrinkB=shrink,
                    lw=1.8 if op != "none" else 1.0,
                    zorder=2,
                    **style,
                )
            )
            mx = (src + dst) * gap / 2
            my = -rad * span * gap / 2 if rad else 0.12
            ax.text(
                mx,
                my,
                op,
                ha="center",
                va="center",
                fontsize=6.5,
                color=style["color"] if op != "none" else "0.45",
                zorder=5,
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.9},
            )
    if title:
        fig.text(0.5, 0.99, title, ha="center", va="top", fontsize=7.5, family="monospace")
    return fig


_MACRO_KEY = re.compile(r"^[012](-[012]){7}$")


def arch_decisions(arch_str: str) -> list[tuple[str, str]]:
    """``(decision, option)`` of an architecture string of a space without cells: the
    ``name=option,...`` form (``choices``, ``mobilenet``, most user spaces) or a
    NAS-Bench-Macro key (``2-2-2-1-2-2-2-0``).

    Raises:
        ValueError: neither form.
    """
    if _MACRO_KEY.match(arch_str):
        from paretune.spaces.macro import MACRO_CHOICE_NAMES

        return [(f"layer{i}", MACRO_CHOICE_NAMES[c]) for i, c in enumerate(arch_str.split("-"), 1)]
    items = [part.split("=", 1) for part in arch_str.split(",")]
    if not arch_str or any(len(item) != 2 or not item[0] for item in items):
        raise ValueError(f"not a 'decision=option,...' string: {arch_str[:80]!r}")
    return [(k, v) for k, v in items]


def decisions_figure(arch_str: str, *, title: str | None = None) -> Figure:
    """A table of an architecture's decisions and options (spaces without cells).

    Raises:
        ValueError: ``arch_str`` is not a ``name=option,...`` string or a macro key.
    """
    from matplotlib.figure import Figure

    rows = arch_decisions(arch_str)
    columns = max(1, -(-len(rows) // 16))  # at most 16 rows per column pair
    per = -(-len(rows) // columns)
    cells = [[] for _ in range(per)]
    for i, (k, v) in enumerate(rows):
        cells[i % per] += [k, v]
    for row in cells:
        row += [""] * (2 * columns - len(row))
    fig = Figure(figsize=(2.6 * columns + 0.4, 0.2 * per + 0.6), dpi=90)
    ax = fig.add_axes((0.02, 0.02, 0.96, 0.96 - 0.3 / (0.2 * per + 0.6)))
    ax.axis("off")
    table = ax.table(
        cellText=cells,
        colLabels=["decision", "option"] * columns,
        loc="upper center",
        cellLoc="left",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    fig.text(0.5, 0.99, title or "architecture", ha="center", va="top", fontsize=8)
    return fig


def cell_png(arch_str: str) -> bytes:
    """The cell picture of ``arch_str`` as PNG bytes."""
    fig = cell_figure(arch_str)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def log_trial_artifacts(client: MlflowClient, run_id: str, arch_str: str) -> None:
    """Log the cell picture of ``arch_str`` to the trial run ``run_id`` as ``cell.png``."""
    client.log_figure(run_id, cell_figure(arch_str), CELL_ARTIFACT)


def draw_cell_pictures(archs: Iterable[str]) -> dict[str, bytes]:
    """``{arch: PNG}`` for each distinct architecture; unreadable strings are skipped with a warning."""
    drawn: dict[str, bytes] = {}
    for arch in archs:
        if arch not in drawn:
            try:
                drawn[arch] = cell_png(arch)
            except ValueError as exc:
                logger.warning("no cell picture for %r (%s)", arch, exc)
    return drawn


def log_cell_pictures(
    client: MlflowClient,
    run_archs: Mapping[str, str],
    *,
    drawn: Mapping[str, bytes] | None = None,
    max_workers: int = 4,
) -> int:
    """Log ``cell.png`` to many trial runs: each distinct architecture is drawn once.

    Args:
        client: the tracking client.
        run_archs: ``{run id: NB201 architecture string}``; unreadable strings are skipped
            with a warning.
        drawn: pictures already drawn by :func:`draw_cell_pictures`; the rest are drawn here.
        max_workers: parallel uploads (the drawing itself is serial).

    Returns:
        The number of runs that got a picture.
    """
    if not run_archs:
        return 0
    pictures = dict(drawn or {})
    pictures.update(draw_cell_pictures(a for a in run_archs.values() if a not in pictures))
    with tempfile.TemporaryDirectory(prefix="paretune-cells-") as tmp:
        files: dict[str, Path] = {}
        jobs: list[tuple[str, Path]] = []
        for run_id, arch in run_archs.items():
            if arch not in pictures:
                continue
            if arch not in files:
                folder = Path(tmp) / str(len(files))
                folder.mkdir()
                files[arch] = folder / CELL_ARTIFACT
                files[arch].write_bytes(pictures[arch])
            jobs.append((run_id, files[arch]))

        def upload(job: tuple[str, Path]) -> None:
            client.log_artifact(job[0], str(job[1]))

        with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
            list(pool.map(upload, jobs))
    return len(jobs)


# ---------------------------------------------------------------------- parent run
def parent_tags(report: SearchReport, config: ExperimentConfig | None = None) -> dict[str, str]:
    """Tags of the parent run: objectives (direction, limit, reference), searcher and summary."""
    tags: dict[str, str] = {}
    reference = report.objectives.reference or {}
    for o in report.objectives:
        tags[f"objective.{o.name}"] = o.direction
        if o.limit is not None:
            tags[f"objective.{o.name}.limit"] = repr(float(o.limit))
        if o.name in reference:
            tags[f"objective.{o.name}.reference"] = repr(float(reference[o.name]))
    if config is not None:
        search = config.search
        tags["searcher"] = search.algorithm
        tags["search.algorithm"] = search.algorithm
        tags["search.num_samples"] = str(search.num_samples)
        tags["search.max_concurrent"] = str(search.max_concurrent)
        tags["search.params"] = json.dumps(search.params, sort_keys=True, default=str)[:MAX_TAG]
    tags["hypervolume_reference"] = report.reference_source
    tags["summary"] = report.summary()[:MAX_TAG]
    return tags


def parent_note(report: SearchReport, config: ExperimentConfig | None = None) -> str:
    """The Markdown description of the parent run (the MLflow UI shows it on the run page)."""
    lines = [f"**{report.summary()}**", ""]
    if config is not None:
        params = ", ".join(f"{k}={v}" for k, v in sorted(config.search.params.items()))
        lines += [
            f"Searcher: `{config.search.algorithm}`"
            + (f" ({params})" if params else "")
            + f", {config.search.num_samples} samples, evaluator `{config.evaluator.kind}`.",
            "",
        ]
    lines += ["| objective | direction | limit | best |", "|---|---|---|---|"]
    best = report.best()
    for o in report.objectives:
        limit = "" if o.limit is None else f"{o.limit:g}"
        value = f"{best[o.name]:.6g}" if o.name in best else "-"
        lines.append(f"| {o.name} | {o.direction} | {limit} | {value} |")
    lines += [
        "",
        "Trials on the Pareto front: filter the runs with `tags.pareto = 'front'`. Plots and CSV "
        "files are under the artifacts `report/`; each trial run has its cell as `cell.png`.",
    ]
    return "\n".join(lines)


def log_parent_summary(
    client: MlflowClient,
    run_id: str,
    report: SearchReport,
    config: ExperimentConfig | None = None,
    *,
    paths: Mapping[str, str | Path] | None = None,
    searcher_state: Mapping[str, Any] | None = None,
) -> None:
    """Log a search's summary to its parent run (does not end the run).

    Metrics: ``num_trials``, ``failed_trials``, ``front_size``, ``feasible_trials``,
    ``best_<objective>`` and ``hypervolume`` at steps 1..N (one per trial, in creation order).
    Tags: see :func:`parent_tags`, plus the Markdown description ``mlflow.note.content``.
    Artifacts: the report files under ``report/`` (written to a temporary folder when ``paths``
    is ``None``) and ``searcher/state.json``.

    Args:
        client: the tracking client.
        run_id: the parent run.
        report: the finished search's report.
        config: the experiment config (for the searcher's settings).
        paths: the files of ``report.write(...)``, by name, when already written.
        searcher_state: the searcher's final state (JSON-serialisable), if it has one.
    """
    import mlflow.entities as me

    ts = int(time.time() * 1000)
    ok = [r for r in report.rows if r.ok]
    feasible = sum(report.objectives.violation(r.values) <= 0 for r in ok)
    metrics = [
        me.Metric("num_trials", len(report.rows), ts, 0),
        me.Metric("failed_trials", report.num_failed, ts, 0),
        me.Metric("front_size", len(report.front), ts, 0),
        me.Metric("feasible_trials", feasible, ts, 0),
    ]
    metrics += [me.Metric(f"best_{k}", v, ts, 0) for k, v in report.best().items()]
    metrics += [
        me.Metric("hypervolume", hv, ts, step) for step, hv in enumerate(report.hv_history, start=1)
    ]
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000])
    tags = parent_tags(report, config)
    tags["mlflow.note.content"] = parent_note(report, config)
    client.log_batch(run_id, tags=[me.RunTag(k, v) for k, v in tags.items()])
    with tempfile.TemporaryDirectory(prefix="paretune-report-") as tmp:
        files = dict(paths) if paths is not None else report.write(tmp)
        for path in files.values():
            client.log_artifact(run_id, str(path), "report")
    if searcher_state is not None:
        client.log_dict(
            run_id, json.loads(json.dumps(searcher_state, default=str)), "searcher/state.json"
        )


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


# ---------------------------------------------------------------------- pareto tags
def tag_pareto(
    client: MlflowClient,
    trial_runs: Mapping[str, str],
    front_ids: Collection[str],
    failed_ids: Collection[str] = (),
    *,
    known: Mapping[str, str] | None = None,
    max_workers: int = 8,
) -> dict[str, int]:
    """Set the ``pareto`` tag of every trial run: ``front``, ``dominated`` or ``failed``.

    Only runs whose tag changes are written (one search request per 100 runs reads the current
    tags), so calling it again after a resume costs little. Writes to an HTTP tracking server
    go out in parallel; a local store is written serially.

    Args:
        client: the tracking client.
        trial_runs: ``{trial id: run id}`` of the nested runs.
        front_ids: trial ids on the Pareto front.
        failed_ids: trial ids that failed (tagged ``failed`` instead of ``dominated``).
        known: ``{trial id: tag}`` known to be in the store already (the tags
            :class:`~paretune.platform.tracking.MlflowTracker` wrote as trials ended); when
            given, the current tags are not read back.
        max_workers: parallel writes for an HTTP tracking server.

    Returns:
        ``{"front": n, "dominated": n, "failed": n, "written": n}``.
    """
    from mlflow.entities import RunTag

    front, failed = set(front_ids), set(failed_ids)
    wanted = {
        run_id: "front" if tid in front else "failed" if tid in failed else "dominated"
        for tid, run_id in trial_runs.items()
    }
    if known is None:
        current = _current_tag(client, list(wanted), "pareto")
    else:
        current = {trial_runs[t]: tag for t, tag in known.items() if t in trial_runs}
    todo = [(rid, v) for rid, v in wanted.items() if current.get(rid) != v]

    def write(item: tuple[str, str]) -> None:
        client.log_batch(item[0], tags=[RunTag("pareto", item[1])])

    remote = str(client.tracking_uri).startswith(("http://", "https://"))
    if remote and len(todo) > 1:
        with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
            list(pool.map(write, todo))
    else:
        for item in todo:
            write(item)
    counts = {k: sum(v == k for v in wanted.values()) for k in ("front", "dominated", "failed")}
    counts["written"] = len(todo)
    return counts


def _current_tag(client: MlflowClient, run_ids: Sequence[str], key: str) -> dict[str, str]:
    """``{run id: value of tag key}`` for the runs that have it."""
    if not run_ids:
        return {}
    exp_id = client.get_run(run_ids[0]).info.experiment_id
    out: dict[str, str] = {}
    for i in range(0, len(run_ids), 100):
        chunk = run_ids[i : i + 100]
        ids = ", ".join(f"'{r}'" for r in chunk)
        for run in client.search_runs(
            [exp_id], f"attributes.run_id IN ({ids})", max_results=len(chunk)
        ):
            if key in run.data.tags:
                out[run.info.run_id] = run.data.tags[key]
    return out


# ---------------------------------------------------------------------- front models
@dataclass
class LoggedFrontModel:
    """One front architecture logged as an MLflow model."""

    trial_id: str
    run_id: str
    model_id: str
    model_uri: str
    registered_version: str | None = None


def load_trial_model(
    trial_dir: str | Path,
    build_fn: Callable[[Mapping[str, Any]], nn.Module] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """The trained network a trial saved: ``weights.json`` says how to build it, ``weights.pt``
    holds its ``state_dict``.

    ``weights.json`` holds ``arch`` (the architecture string) and ``build`` (keyword arguments
    of the space's ``build``: ``channels``, ``cells_per_stage``, ``input_size``,
    ``in_channels``, ``num_classes``), and optionally ``space`` (default ``nb201``),
    ``dataset`` and ``data_path`` (where a real input example comes from).

    Args:
        trial_dir: the trial's directory.
        build_fn: builds the untrained network from the ``weights.json`` dict; default: the
            space's ``build(decode(arch), **build)``.

    Returns:
        The network in eval mode with the trained weights, and the ``weights.json`` dict.

    Raises:
        FileNotFoundError: ``weights.pt`` or ``weights.json`` is missing.
    """
    import torch

    folder = Path(trial_dir)
    meta_path, weights_path = folder / WEIGHTS_META_FILE, folder / WEIGHTS_FILE
    for p in (meta_path, weights_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such file (the trial saved no weights)")
    meta = json.loads(meta_path.read_text())
    model = (build_fn or default_build)(meta)
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    return model, meta


def default_build(meta: Mapping[str, Any]) -> nn.Module:
    """The untrained network of a ``weights.json`` dict (see :func:`load_trial_model`)."""
    from paretune.spaces import make_space

    space = make_space(meta.get("space", "nb201"))
    return space.build(space.decode(meta["arch"]), **dict(meta.get("build", {})))


def example_input(
    dataset: str, data_path: str | None = None, *, n: int = EXAMPLE_BATCH, seed: int = 0
) -> np.ndarray:
    """``n`` real test images of ``dataset`` as a float32 array of shape (n, C, H, W)."""
    from paretune.objectives.data import load_dataset

    data = load_dataset(dataset, path=data_path, seed=seed)
    return data.test.x[:n].numpy().copy()


def log_front_models(
    tracking_uri: str,
    front: Sequence[TrialRow],
    trial_runs: Mapping[str, str],
    trial_dirs: Mapping[str, str | Path],
    *,
    register_name: str | None = None,
    build_fn: Callable[[Mapping[str, Any]], nn.Module] | None = None,
    input_example: np.ndarray | None = None,
) -> list[LoggedFrontModel]:
    """Log the trained networks of the front as MLflow pytorch models into their trial runs.

    Each network is saved in MLflow's ``pt2`` format (``torch.export``: loading needs torch,
    not paretune, and unpickles nothing) with a signature inferred from real inputs and the
    network's outputs on them, those inputs as the input example, the tags ``arch`` and
    ``trial_id``; the trial run gets the tags ``model_id`` and ``model_uri``. Front trials
    without a run or saved weights are skipped (one warning names them).

    Args:
        tracking_uri: the experiment's tracking URI.
        front: the report's front rows.
        trial_runs: ``{trial id: run id}`` of the nested runs.
        trial_dirs: ``{trial id: trial directory}`` (where ``weights.pt``/``weights.json`` are).
        register_name: also register each model as a version of this registered model.
        build_fn: see :func:`load_trial_model`.
        input_example: real inputs (N, C, H, W); default: :data:`EXAMPLE_BATCH` test images of
            the dataset named in ``weights.json``. With N = 1 the model only accepts batches
            of one (``torch.export`` specialises a size-1 dimension).

    Returns:
        The logged models, in front order.

    Raises:
        ValueError: no input example can be found for a model.
    """
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    logged: list[LoggedFrontModel] = []
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={_version('numpy')}"]
    skipped: list[str] = []
    with _tracking_uri(tracking_uri):
        for row in front:
            run_id = trial_runs.get(row.trial_id)
            folder = trial_dirs.get(row.trial_id)
            if run_id is None or folder is None:
                skipped.append(row.trial_id)
                continue
            try:
                model, meta = load_trial_model(folder, build_fn)
            except FileNotFoundError:
                skipped.append(row.trial_id)
                continue
            example = input_example
            if example is None and meta.get("dataset"):
                example = example_input(meta["dataset"], meta.get("data_path"))
            if example is None:
                raise ValueError(
                    f"front trial {row.trial_id}: no input example (pass input_example= or "
                    "write 'dataset' into weights.json)"
                )
            with torch.no_grad():
                output = model(torch.as_tensor(example)).numpy()
            signature = infer_signature(example, output)
            lm = client.create_logged_model(
                client.get_run(run_id).info.experiment_id,
                name=MODEL_NAME,
                source_run_id=run_id,
                tags={"arch": row.arch, "trial_id": row.trial_id},
                params={k: str(v) for k, v in dict(meta.get("build", {})).items()},
                model_type=f"{meta.get('space', 'nb201')}-network",
            )
            info = mlflow.pytorch.log_model(
                model,
                name=MODEL_NAME,
                run_id=run_id,
                model_id=lm.model_id,
                signature=signature,
                input_example=example,
                serialization_format="pt2",
                registered_model_name=register_name,
                pip_requirements=requirements,
                metadata={"arch": row.arch, "trial_id": row.trial_id},
            )
            version = getattr(info, "registered_model_version", None)
            uri = f"models:/{lm.model_id}"
            tags = [_tag("model_id", lm.model_id), _tag("model_uri", uri)]
            if version is not None:
                tags.append(_tag("registered_model", f"{register_name}/{version}"))
            client.log_batch(run_id, tags=tags)
            logged.append(
                LoggedFrontModel(
                    row.trial_id,
                    run_id,
                    lm.model_id,
                    uri,
                    None if version is None else str(version),
                )
            )
    if skipped:
        logger.warning(
            "no MLflow model for %d front trial(s) without a run or saved weights "
            "(%s in the trial directory): %s",
            len(skipped),
            WEIGHTS_FILE,
            ", ".join(skipped),
        )
    return logged


def _tag(key: str, value: str) -> Any:
    from mlflow.entities import RunTag

    return RunTag(key, value)


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


@contextlib.contextmanager
def _tracking_uri(uri: str) -> Iterator[None]:
    """Use ``uri`` as MLflow's global tracking URI for the block, then restore the previous one."""
    import os

    import mlflow

    env_before = os.environ.get("MLFLOW_TRACKING_URI")
    before = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)  # None unsets it (and its environment variable)
        if env_before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env_before
