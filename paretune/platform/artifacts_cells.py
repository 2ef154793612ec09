"""Pictures of architectures for the MLflow UI: NB201 and DARTS cells, decision tables."""

from __future__ import annotations

import io
import logging
import re
import tempfile
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from mlflow.tracking import MlflowClient


logger = logging.getLogger("paretune.platform.artifacts")

CELL_ARTIFACT = "cell.png"

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
    from matplotlib.patches import Circle

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
        _draw_edge(ax, src, dst, gap, rad, shrink, style, 13, 2.0 if op != "none" else 1.2)
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
    from matplotlib.patches import Circle

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
            _draw_edge(ax, src, dst, gap, rad, shrink, style, 11, 1.8 if op != "none" else 1.0)
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


def _draw_edge(
    ax: Any,
    src: int,
    dst: int,
    gap: float,
    rad: float,
    shrink: float,
    style: dict,
    scale: float,
    width: float,
) -> None:
    """An arrow from node ``src`` to node ``dst`` on the x axis, bent by ``rad`` (arc3)."""
    from matplotlib.patches import FancyArrowPatch

    ax.add_artist(
        FancyArrowPatch(
            (src * gap, 0),
            (dst * gap, 0),
            connectionstyle=f"arc3,rad={rad}",
            arrowstyle="-|>",
            mutation_scale=scale,
            shrinkA=shrink,
            shrinkB=shrink,
            lw=width,
            zorder=2,
            **style,
        )
    )
