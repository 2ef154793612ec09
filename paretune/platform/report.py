"""The outcome of a search: trial table, Pareto front, hypervolume history, plots.

Works from a finished ``ResultGrid`` or from an experiment directory on disk, so
``paretune report EXPERIMENT_DIR`` gives the same answer later.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from paretune.objectives.base import ObjectiveSet
from paretune.search_algos.pareto import constrained_front_indices, hypervolume, reference_point

ORIGIN_KEY = "origin"  # the extras key (a column of the CSV files) naming a merged row's search


@dataclass
class TrialRow:
    """One trial as the report sees it."""

    trial_id: str
    number: int
    arch: str
    values: dict[str, float]
    ok: bool
    error: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    path: str | None = None  # the trial's directory (Ray's ``Result.path``), when known
    origin: str | None = None  # the search it came from, in a merged report (merge_reports)


def trial_number(trial_id: str, trial_path: str | None = None) -> int:
    """The creation index of a trial: Ray names trial directories ``<trainable>_<id>_<index>_...``."""
    if trial_path:
        match = re.search(rf"_{re.escape(trial_id)}_(\d+)", Path(trial_path).name)
        if match:
            return int(match.group(1))
    tail = trial_id.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def rows_from_results(
    results: Iterable[Any], objectives: ObjectiveSet, arch_of: Any, first_number: int = 0
) -> list[TrialRow]:
    """Rows from Ray ``Result`` objects (a ``ResultGrid`` iterates over them).

    ``first_number`` is added to Ray's creation index (the trials of a later segment).
    """
    rows = []
    for res in results:
        metrics = dict(res.metrics or {})
        config = dict(res.config or metrics.get("config") or {})
        trial_id = str(metrics.get("trial_id") or Path(res.path).name)
        values = {n: metrics.get(n) for n in objectives.names}
        ok = res.error is None and objectives.is_valid(values)
        error = None
        if res.error is not None:
            error = (
                str(res.error).strip().splitlines()[-1]
                if str(res.error).strip()
                else type(res.error).__name__
            )
        elif not ok:
            error = "missing or non-finite objective values"
        try:
            arch = arch_of(config)
        except Exception as exc:  # noqa: BLE001 - a row is still worth reporting
            arch = f"<unreadable: {exc}>"
        extras = {
            k: v for k, v in metrics.items() if k.startswith("test_") or k.startswith("source/")
        }
        rows.append(
            TrialRow(
                trial_id=trial_id,
                number=first_number + trial_number(trial_id, res.path),
                arch=arch,
                values={k: float(v) for k, v in values.items() if ok},
                ok=ok,
                error=error,
                extras=extras,
                path=str(res.path) if getattr(res, "path", None) else None,
            )
        )
    rows.sort(key=lambda r: (r.number, r.trial_id))
    return rows


@dataclass
class SearchReport:
    """Front, hypervolume history and tables of a finished search."""

    objectives: ObjectiveSet
    rows: list[TrialRow]
    front: list[TrialRow]
    reference: np.ndarray | None
    reference_source: str
    hv_history: list[float]

    @property
    def num_failed(self) -> int:
        return sum(not r.ok for r in self.rows)

    @property
    def hypervolume(self) -> float:
        return self.hv_history[-1] if self.hv_history else 0.0

    def best(self) -> dict[str, float]:
        """The best value reached for each objective (over successful trials)."""
        out = {}
        for o in self.objectives:
            vals = [r.values[o.name] for r in self.rows if r.ok]
            if vals:
                out[o.name] = min(vals) if o.direction == "min" else max(vals)
        return out

    def front_table(self) -> str:
        """The Pareto front as an aligned text table, sorted by the first objective."""
        names = self.objectives.names
        extra = [k for k in ("test_accuracy",) if any(k in r.extras for r in self.front)]
        header = ["trial", *[f"{o.name} ({o.direction})" for o in self.objectives], *extra, "arch"]
        first = self.objectives.objectives[0]
        ordered = sorted(self.front, key=lambda r: r.values[first.name] * first.sign)
        lines = [header]
        for r in ordered:
            cells = [
                r.trial_id,
                *[_fmt(r.values[n]) for n in names],
                *[_fmt(r.extras.get(k)) for k in extra],
                r.arch,
            ]
            lines.append(cells)
        widths = [max(len(str(row[i])) for row in lines) for i in range(len(header))]
        out = [
            "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in lines
        ]
        out.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(out)

    def summary(self) -> str:
        ref = "none" if self.reference is None else f"{self.reference_source}"
        return (
            f"{len(self.rows)} trials, {self.num_failed} failed, {len(self.front)} on the Pareto front, "
            f"hypervolume {self.hypervolume:.6g} (reference: {ref})"
        )

    # ------------------------------------------------------------------ files
    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write trials.csv, pareto_front.csv and the plots; returns the paths by name.

        Plots: ``pareto_front.png`` (every pair of objectives), ``hypervolume.png`` and, for
        three or more objectives, ``parallel_coordinates.png``.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "trials": out / "trials.csv",
            "front": out / "pareto_front.csv",
            "front_plot": out / "pareto_front.png",
            "hv_plot": out / "hypervolume.png",
        }
        if len(self.objectives) >= 3:
            paths["parallel_plot"] = out / "parallel_coordinates.png"
        front_ids = {r.trial_id for r in self.front}
        self._write_csv(paths["trials"], self.rows, front_ids)
        self._write_csv(paths["front"], self.front, front_ids)
        plot_front(self, paths["front_plot"])
        plot_hypervolume(self, paths["hv_plot"])
        if "parallel_plot" in paths:
            plot_parallel(self, paths["parallel_plot"])
        return paths

    def _write_csv(self, path: Path, rows: Sequence[TrialRow], front_ids: set[str]) -> None:
        extra_keys = sorted({k for r in rows for k in r.extras})
        names = self.objectives.names
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(
                ["trial_id", "number", "status", "pareto", *names, *extra_keys, "arch", "error"]
            )
            for r in rows:
                w.writerow(
                    [
                        r.trial_id,
                        r.number,
                        "ok" if r.ok else "failed",
                        "front" if r.trial_id in front_ids else "dominated",
                        *[r.values.get(n, "") for n in names],
                        *[r.extras.get(k, "") for k in extra_keys],
                        r.arch,
                        r.error or "",
                    ]
                )


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def build_report(rows: list[TrialRow], objectives: ObjectiveSet) -> SearchReport:
    """Pareto front (constrained domination), reference point and hypervolume after each trial.

    The reference point is the configured one, else the nadir of all successful trials plus 10%
    of their range (marked ``derived from the trials``).
    """
    ok = [r for r in rows if r.ok]
    points = objectives.matrix(r.values for r in ok)
    violations = np.array([objectives.violation(r.values) for r in ok])
    front = [ok[i] for i in constrained_front_indices(points, violations)] if ok else []
    reference = objectives.reference_vector()
    source = "configured"
    if reference is None and len(ok):
        reference = reference_point(points)
        source = "derived from the trials: nadir + 10% of range"
    history: list[float] = []
    if reference is not None:
        feasible_seen: list[np.ndarray] = []
        for r in rows:
            if r.ok and objectives.violation(r.values) <= 0:
                feasible_seen.append(objectives.vector(r.values))
            history.append(
                hypervolume(np.array(feasible_seen), reference) if feasible_seen else 0.0
            )
    return SearchReport(objectives, rows, front, reference, source, history)


def _finish_pair_axes(ax: Any, xo: Any, yo: Any, *, same_objective: bool) -> None:
    """Limits as dotted lines, axis labels and a grid on one panel of a pairwise plot."""
    if xo.limit is not None:
        ax.axvline(xo.limit, color="tab:purple", ls=":", lw=1)
    if yo.limit is not None and not same_objective:
        ax.axhline(yo.limit, color="tab:purple", ls=":", lw=1)
    ax.set_xlabel(_label(xo))
    ax.set_ylabel(_label(yo))
    ax.grid(alpha=0.3)


def _label(o: Any) -> str:
    """An axis label: the objective, its direction and its limit."""
    text = f"{o.name} ({o.direction})"
    return text if o.limit is None else f"{text}, limit {o.limit:g}"


def plot_front(report: SearchReport, path: Path) -> None:
    """Every pair of objectives as a scatter: front highlighted, dominated points faded.

    Limits are drawn as dotted lines; infeasible trials are marked with a cross.
    """

    objs = report.objectives.objectives
    pairs = [(i, j) for i in range(len(objs)) for j in range(i + 1, len(objs))] or [(0, 0)]
    cols = min(3, len(pairs))
    rows_n = math.ceil(len(pairs) / cols)
    fig = Figure(figsize=(4.6 * cols, 4.0 * rows_n + 0.5), dpi=90)
    axes = fig.subplots(rows_n, cols, squeeze=False)
    ok = [r for r in report.rows if r.ok]
    front_ids = {r.trial_id for r in report.front}
    dom = [r for r in ok if r.trial_id not in front_ids]
    infeasible = [r for r in dom if report.objectives.violation(r.values) > 0]
    dom = [r for r in dom if report.objectives.violation(r.values) <= 0]
    for ax, (i, j) in zip(axes.flat, pairs, strict=False):
        xo, yo = objs[i], objs[j]
        ax.scatter(
            [r.values[xo.name] for r in dom],
            [r.values[yo.name] for r in dom],
            s=16,
            c="0.55",
            alpha=0.35,
            linewidths=0,
            label=f"dominated ({len(dom)})",
        )
        if infeasible:
            ax.scatter(
                [r.values[xo.name] for r in infeasible],
                [r.values[yo.name] for r in infeasible],
                s=18,
                c="0.55",
                alpha=0.5,
                marker="x",
                label=f"beyond a limit ({len(infeasible)})",
            )
        ax.scatter(
            [r.values[xo.name] for r in report.front],
            [r.values[yo.name] for r in report.front],
            s=36,
            c="tab:red",
            edgecolors="black",
            linewidths=0.5,
            zorder=3,
            label=f"Pareto front ({len(report.front)})",
        )
        _finish_pair_axes(ax, xo, yo, same_objective=(i, j) == (0, 0))
    for ax in list(axes.flat)[len(pairs) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8, loc="best")
    fig.suptitle(f"{len(ok)} trials, {len(report.front)} on the Pareto front")
    fig.tight_layout()
    fig.savefig(path)


def plot_parallel(report: SearchReport, path: Path) -> None:
    """Parallel coordinates: one axis per objective, better values up, front lines in colour.

    Each axis is scaled to the range of the successful trials and labelled with its extremes;
    dominated trials are thin grey lines, front trials coloured by the first objective.
    """

    objs = report.objectives.objectives
    ok = [r for r in report.rows if r.ok]
    fig = Figure(figsize=(max(6.0, 2.0 * len(objs) + 1.5), 4.4), dpi=90)
    ax = fig.add_subplot()
    if not ok:
        ax.text(0.5, 0.5, "no successful trials", ha="center", va="center")
        ax.axis("off")
        fig.savefig(path)
        return
    raw = np.array([[r.values[o.name] for o in objs] for r in ok], dtype=float)
    lo, hi = raw.min(axis=0), raw.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    scaled = (raw - lo) / span
    for k, o in enumerate(objs):
        if o.direction == "min":  # better is up on every axis
            scaled[:, k] = 1.0 - scaled[:, k]
    xs = np.arange(len(objs))
    front_ids = {r.trial_id for r in report.front}
    on_front = np.array([r.trial_id in front_ids for r in ok])
    for line in scaled[~on_front]:
        ax.plot(xs, line, color="0.6", alpha=0.3, lw=0.8)
    cmap = colormaps["viridis"]
    first = scaled[on_front, 0] if on_front.any() else np.zeros(0)
    for line, c in zip(scaled[on_front], first, strict=True):
        ax.plot(xs, line, color=cmap(0.1 + 0.8 * c), alpha=0.9, lw=1.8, marker="o", ms=3)
    for k, o in enumerate(objs):
        ax.axvline(k, color="0.2", lw=0.8)
        best, worst = (lo[k], hi[k]) if o.direction == "min" else (hi[k], lo[k])
        ax.text(k, 1.03, f"{best:.4g}", ha="center", va="bottom", fontsize=8)
        ax.text(k, -0.03, f"{worst:.4g}", ha="center", va="top", fontsize=8)
    ax.set_xticks(xs, [f"{o.name}\n({o.direction})" for o in objs])
    ax.xaxis.set_ticks_position("top")
    ax.tick_params(axis="x", pad=16, length=0)
    ax.set_yticks([])
    ax.set_ylim(-0.12, 1.12)
    ax.set_xlim(-0.3, len(objs) - 0.7)
    for side in ("left", "right", "bottom", "top"):
        ax.spines[side].set_visible(False)
    ax.set_title(
        f"{len(report.front)} on the front (coloured) of {len(ok)} trials; better is up",
        fontsize=9,
        y=-0.16,
    )
    fig.tight_layout()
    fig.savefig(path)


def plot_hypervolume(report: SearchReport, path: Path) -> None:
    """The hypervolume of the feasible trials seen so far, after each trial."""

    fig = Figure(figsize=(5.5, 3.6), dpi=90)
    ax = fig.add_subplot()
    hv = report.hv_history
    ax.plot(range(1, len(hv) + 1), hv, marker=".", drawstyle="steps-post")
    ax.set_xlabel("trials")
    ax.set_ylabel("hypervolume")
    final = f"final {hv[-1]:.6g}; " if hv else ""
    ax.set_title(f"{final}reference: {report.reference_source}", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


# ---------------------------------------------------------------------- merged searches
def merge_reports(
    reports: Sequence[SearchReport], labels: Sequence[str] | None = None
) -> SearchReport:
    """One report over the trials of several searches of the same objectives.

    This is how a sweep of reward settings (one search per setting) gives one front: the front
    is the (constrained) non-dominated set of the union of all trials, the reference point is
    the configured one or else derived from the union, and the hypervolume history runs over
    the searches one after the other, in the order given.

    Every row keeps its origin: ``labels[i]`` (default ``"0"``, ``"1"``, ...) is written to
    ``TrialRow.origin`` and to ``extras["origin"]`` (so ``trials.csv`` and
    ``pareto_front.csv`` get an ``origin`` column). Trial ids are kept as they are unless two
    searches share one; then every id becomes ``"<origin>/<trial id>"``, since the report tells
    front members by id. The rows are copies: the given reports are not changed.

    Raises ``ValueError`` for no reports, a wrong number of labels, repeated labels or
    different objectives (names, directions, limits or reference).
    """
    reports = list(reports)
    if not reports:
        raise ValueError("merge_reports: no reports to merge")
    labels = [str(i) for i in range(len(reports))] if labels is None else [str(x) for x in labels]
    if len(labels) != len(reports):
        raise ValueError(f"merge_reports: {len(labels)} labels for {len(reports)} reports")
    repeated = sorted({x for x in labels if labels.count(x) > 1})
    if repeated:
        raise ValueError(f"merge_reports: labels repeat: {repeated}")
    objectives = reports[0].objectives
    for label, rep in zip(labels, reports, strict=True):
        if rep.objectives != objectives:
            raise ValueError(
                f"merge_reports: report {label!r} has objectives {_describe(rep.objectives)}, "
                f"the first has {_describe(objectives)}"
            )
    ids = [r.trial_id for rep in reports for r in rep.rows]
    prefix = len(set(ids)) != len(ids)
    rows = [
        dataclasses.replace(
            r,
            trial_id=f"{label}/{r.trial_id}" if prefix else r.trial_id,
            values=dict(r.values),
            extras={**r.extras, ORIGIN_KEY: label},
            origin=label,
        )
        for label, rep in zip(labels, reports, strict=True)
        for r in rep.rows
    ]
    return build_report(rows, objectives)


def _describe(objectives: ObjectiveSet) -> str:
    parts = [
        f"{o.name} ({o.direction}{'' if o.limit is None else f', limit {o.limit:g}'})"
        for o in objectives
    ]
    ref = "" if objectives.reference is None else f", reference {dict(objectives.reference)}"
    return "[" + ", ".join(parts) + "]" + ref


@dataclass
class OriginSummary:
    """One search of a merged report: its trials, its own front and what it gives the union."""

    origin: str
    trials: int
    failed: int
    front: int  # size of its own (constrained) Pareto front
    hypervolume: float  # of its feasible trials, against the merged report's reference point
    on_merged_front: int  # members of the merged front that came from it


def summarize_origins(report: SearchReport) -> list[OriginSummary]:
    """Per origin of a merged report (first appearance order): trials, front, hypervolume.

    The hypervolumes all use the merged report's reference point, so they compare with each
    other and with ``report.hypervolume`` (the searches' own reports each derive their own
    reference from their own trials when none is configured, and do not compare).
    """
    objectives = report.objectives
    origins = list(dict.fromkeys(r.origin for r in report.rows if r.origin is not None))
    merged_front = [r.origin for r in report.front]
    out = []
    for origin in origins:
        rows = [r for r in report.rows if r.origin == origin]
        ok = [r for r in rows if r.ok]
        points = objectives.matrix(r.values for r in ok)
        violations = np.array([objectives.violation(r.values) for r in ok])
        own_front = constrained_front_indices(points, violations) if ok else []
        hv = 0.0
        if report.reference is not None and ok:
            feasible = points[violations <= 0]
            hv = hypervolume(feasible, report.reference) if len(feasible) else 0.0
        out.append(
            OriginSummary(
                origin=origin,
                trials=len(rows),
                failed=len(rows) - len(ok),
                front=len(own_front),
                hypervolume=hv,
                on_merged_front=merged_front.count(origin),
            )
        )
    return out


def plot_origins(report: SearchReport, path: Path) -> None:
    """A merged report's trials coloured by origin, every pair of objectives.

    Dominated trials are small faded dots in their origin's colour; members of the merged front
    are large dots in their origin's colour with a black edge, so the plot shows which search
    contributed which part of the front.
    """

    objs = report.objectives.objectives
    pairs = [(i, j) for i in range(len(objs)) for j in range(i + 1, len(objs))] or [(0, 0)]
    cols = min(3, len(pairs))
    rows_n = math.ceil(len(pairs) / cols)
    fig = Figure(figsize=(4.6 * cols, 4.0 * rows_n + 0.5), dpi=90)
    axes = fig.subplots(rows_n, cols, squeeze=False)
    ok = [r for r in report.rows if r.ok]
    origins = list(dict.fromkeys(str(r.origin) for r in report.rows))
    cmap = colormaps["tab10"]
    front_ids = {r.trial_id for r in report.front}
    for ax, (i, j) in zip(axes.flat, pairs, strict=False):
        xo, yo = objs[i], objs[j]
        for k, origin in enumerate(origins):
            mine = [r for r in ok if str(r.origin) == origin]
            dom = [r for r in mine if r.trial_id not in front_ids]
            top = [r for r in mine if r.trial_id in front_ids]
            colour = cmap(k % 10)
            ax.scatter(
                [r.values[xo.name] for r in dom],
                [r.values[yo.name] for r in dom],
                s=12,
                color=colour,
                alpha=0.3,
                linewidths=0,
            )
            ax.scatter(
                [r.values[xo.name] for r in top],
                [r.values[yo.name] for r in top],
                s=40,
                color=colour,
                edgecolors="black",
                linewidths=0.6,
                zorder=3,
                label=f"{origin}: {len(top)} on front / {len(mine)}",
            )
        _finish_pair_axes(ax, xo, yo, same_objective=(i, j) == (0, 0))
    for ax in list(axes.flat)[len(pairs) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="best")
    fig.suptitle(
        f"{len(ok)} trials of {len(origins)} searches, {len(report.front)} on the merged front"
    )
    fig.tight_layout()
    fig.savefig(path)
