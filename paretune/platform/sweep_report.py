"""The report of a sweep: per member, the merged front with origins, per group (members that
differ only by seed) mean and spread, hypervolume over trials per group; its MLflow parent run."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from paretune.platform.report import SearchReport, merge_reports, plot_origins, summarize_origins
from paretune.search_algos.pareto import hypervolume

logger = logging.getLogger(__name__)


@dataclass
class MemberRow:
    """One member of the sweep report."""

    name: str
    group: str
    status: str
    trials: int = 0
    failed: int = 0
    hypervolume: float = float("nan")  # against the merged reference point
    gap: float = float("nan")  # to the table's true front (table evaluators), else nan
    best: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    curve: list[float] = field(default_factory=list)  # hypervolume after each trial


@dataclass
class GroupRow:
    """Members differing only by seed: count, mean and spread (sample std) of their numbers."""

    group: str
    members: int
    hv_mean: float
    hv_std: float
    gap_mean: float
    gap_std: float
    trials_mean: float


@dataclass
class SweepReport:
    members: list[MemberRow]
    groups: list[GroupRow]
    merged: SearchReport | None
    paths: dict[str, Path]


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value) of the finite values; nan if none."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def group_rows(members: list[MemberRow]) -> list[GroupRow]:
    """Mean and spread per group, in order of first appearance; only finished members count."""
    out = []
    for g in dict.fromkeys(m.group for m in members):
        ms = [m for m in members if m.group == g and m.status == "finished"]
        hv = mean_std([m.hypervolume for m in ms])
        gap = mean_std([m.gap for m in ms])
        trials = float(np.mean([m.trials for m in ms])) if ms else float("nan")
        out.append(GroupRow(g, len(ms), *hv, *gap, trials))
    return out


def hv_curve(
    report: SearchReport, origin: str, reference: np.ndarray, points: int = 60
) -> list[float]:
    """Hypervolume of the member's first k feasible trials (trial order), at ~``points`` k's."""
    objectives = report.objectives
    rows = sorted((r for r in report.rows if r.origin == origin), key=lambda r: r.number)
    n = len(rows)
    if n == 0:
        return []
    mat = [
        objectives.matrix([r.values])[0] if r.ok and objectives.violation(r.values) <= 0 else None
        for r in rows
    ]
    steps = sorted({max(1, round(n * i / points)) for i in range(1, points + 1)} | {n})
    curve = [0.0] * n
    for k in steps:
        pts = [p for p in mat[:k] if p is not None]
        curve[k - 1] = hypervolume(np.array(pts), reference) if pts else 0.0
    last = 0.0
    for i in range(n):  # fill between the sampled k's with the last value (monotone)
        last = curve[i] = max(curve[i], last) if curve[i] else last
    return curve


def table_gap(config: Any, archs: list[str]) -> float:
    """``1 - HV(evaluated) / HV(true front)`` on the NB201 table, else nan.

    The convention of ``benchmarks/nb201_bench.py``: the evaluated architectures are scored
    with test accuracy (the search saw validation accuracy) and the hardware columns, every
    objective min-max normalised over the whole table; the true front is the table's exact front
    and the reference its nadir plus 10% of its range. Only for the NB201 table with objectives
    accuracy (max), latency and energy (min), in that order.
    """
    ev = config.evaluator
    names = [(o.name, o.direction) for o in config.objectives]
    if getattr(ev, "kind", None) != "table" or getattr(ev, "columns", None):
        return float("nan")
    if names != [("accuracy", "max"), ("latency", "min"), ("energy", "min")]:
        return float("nan")
    key = (str(ev.path), ev.dataset, ev.latency_device, ev.energy_device)
    if key not in _BENCH:
        from paretune.objectives.nb201_table import load_table
        from paretune.search_algos.pareto import reference_point

        table = load_table(ev.path)
        cols = [
            f"{ev.dataset}_test_200",
            f"latency_ms_{ev.latency_device}",
            f"energy_mj_{ev.energy_device}",
        ]
        if any(c not in table.columns for c in cols):
            return float("nan")
        raw = table[cols].to_numpy(dtype=float) * np.array([-1.0, 1.0, 1.0])
        lo, hi = raw.min(axis=0), raw.max(axis=0)
        scores = (raw - lo) / np.where(hi > lo, hi - lo, 1.0)
        front = _nondominated(scores)
        ref = reference_point(front, 0.1)
        rows = {a: i for i, a in enumerate(table["arch"])}
        _BENCH[key] = (scores, rows, ref, hypervolume(front, ref))
    scores, rows, ref, true_hv = _BENCH[key]
    idx = [rows[a] for a in archs if a in rows]
    return 1.0 - (hypervolume(scores[idx], ref) if idx else 0.0) / true_hv


def _nondominated(points: np.ndarray) -> np.ndarray:
    import moocore

    p = np.unique(points, axis=0)
    return p[moocore.is_nondominated(p)]


_BENCH: dict[tuple[str, str], Any] = {}


def build_sweep_report(sweep_dir: Path, state: dict[str, Any]) -> SweepReport:
    """Read every member's report (from its journal), merge them, write tables and plots."""
    from paretune.platform import launcher
    from paretune.platform.config import ConfigError
    from paretune.platform.experiment import load_experiment

    out = sweep_dir / "report"
    out.mkdir(exist_ok=True)
    reports, labels, rows = [], [], []
    configs = {}
    for name, ms in state["members"].items():
        row = MemberRow(name, ms["group"], ms["status"], wall_s=ms.get("wall_s", 0.0))
        rows.append(row)
        exp = ms.get("experiment_dir")
        if not exp or not Path(exp).is_dir():
            continue
        try:
            rep = launcher.report(exp)
            configs[name] = load_experiment(Path(exp))[0]
        except (ConfigError, OSError) as exc:
            logger.warning("member %s: no report (%s)", name, exc)
            continue
        row.best = rep.best()
        reports.append(rep)
        labels.append(name)
    merged = merge_reports(reports, labels) if reports else None
    if merged is not None:
        by = {o.origin: o for o in summarize_origins(merged)}
        for row in rows:
            if row.name in by:
                o = by[row.name]
                row.trials, row.failed, row.hypervolume = o.trials, o.failed, o.hypervolume
                if merged.reference is not None:
                    row.curve = hv_curve(merged, row.name, merged.reference)
                archs = [r.arch for r in merged.rows if r.origin == row.name and r.ok]
                try:
                    row.gap = table_gap(configs[row.name], archs)
                except Exception as exc:  # noqa: BLE001 - the gap is extra information
                    logger.warning("member %s: no gap to the true front (%s)", row.name, exc)
    groups = group_rows(rows)
    paths: dict[str, Path] = {}
    if merged is not None:
        paths.update(merged.write(out))
        paths["sweep_front"] = out / "sweep_front.png"
        plot_origins(merged, paths["sweep_front"])
        if any(r.curve for r in rows):
            paths["hypervolume_groups"] = out / "hypervolume_by_group.png"
            plot_group_curves(rows, paths["hypervolume_groups"])
    rep = SweepReport(rows, groups, merged, paths)
    paths["summary"] = out / "summary.json"
    paths["summary"].write_text(json.dumps(summary_dict(rep), indent=2, default=_nan_none))
    paths["text"] = out / "report.txt"
    paths["text"].write_text(format_report(rep) + "\n")
    return rep


def _nan_none(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else str(value)


def summary_dict(rep: SweepReport) -> dict[str, Any]:
    def clean(d: dict[str, Any]) -> dict[str, Any]:
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in d.items()
            if k != "curve"
        }

    return {
        "members": [clean(vars(m)) for m in rep.members],
        "groups": [clean(vars(g)) for g in rep.groups],
        "merged": None
        if rep.merged is None
        else {
            "trials": len(rep.merged.rows),
            "front": len(rep.merged.front),
            "hypervolume": rep.merged.hypervolume,
        },
    }


def plot_group_curves(rows: list[MemberRow], path: Path) -> None:
    """Hypervolume over trials per group: the mean line and the min-max band of its members."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for g in dict.fromkeys(r.group for r in rows):
        curves = [r.curve for r in rows if r.group == g and r.curve]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        arr = np.array([c[:n] for c in curves])
        x = np.arange(1, n + 1)
        (line,) = ax.plot(x, arr.mean(axis=0), label=f"{g} (n={len(curves)})")
        if len(curves) > 1:
            ax.fill_between(x, arr.min(axis=0), arr.max(axis=0), alpha=0.2, color=line.get_color())
    ax.set_xlabel("trials")
    ax.set_ylabel("hypervolume (merged reference)")
    ax.set_title("Hypervolume over trials per group (mean, min-max band)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _f(value: float, fmt: str = ".6g") -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, fmt)


def _table(lines: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in lines) for i in range(len(lines[0]))]
    text = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return text


def format_report(rep: SweepReport) -> str:
    """Members, groups (when some member shares its group) and the merged front, as text."""
    objs = list(rep.merged.objectives) if rep.merged is not None else []
    head = ["member", "status", "trials", "failed", "hypervolume", "gap"]
    head += [f"best {o.name}" for o in objs] + ["wall s"]
    lines = [head]
    for m in rep.members:
        lines.append(
            [m.name, m.status, str(m.trials), str(m.failed), _f(m.hypervolume), _f(m.gap, ".4f")]
            + [_f(m.best.get(o.name, float("nan")), ".4g") for o in objs]
            + [f"{m.wall_s:.0f}"]
        )
    text = ["Members", *_table(lines)]
    if any(g.members > 1 for g in rep.groups):
        glines = [["group", "members", "hv mean", "hv std", "gap mean", "gap std", "trials"]]
        for g in rep.groups:
            glines.append(
                [
                    g.group,
                    str(g.members),
                    _f(g.hv_mean),
                    _f(g.hv_std),
                    _f(g.gap_mean, ".4f"),
                    _f(g.gap_std, ".4f"),
                    _f(g.trials_mean, ".0f"),
                ]
            )
        text += ["", "Groups (members that differ only by seed): mean and spread (sample std)"]
        text += _table(glines)
    if rep.merged is not None:
        m = rep.merged
        text += ["", f"Merged front ({len(m.front)} of {len(m.rows)} trials), origin = member"]
        lines = [["origin", "trial", *[f"{o.name} ({o.direction})" for o in objs], "arch"]]
        first = objs[0]
        for r in sorted(m.front, key=lambda r: r.values[first.name] * first.sign)[:40]:
            lines.append(
                [str(r.origin), r.trial_id, *[f"{r.values[o.name]:.4g}" for o in objs], r.arch]
            )
        text += _table(lines)
        if len(m.front) > 40:
            text.append(f"... {len(m.front) - 40} more in pareto_front.csv")
        text.append(
            f"hypervolume: against the merged reference ({m.reference_source}); "
            "gap: 1 - HV(evaluated)/HV(true front) on the NB201 table (test accuracy)"
        )
    return "\n".join(text)


# --------------------------------------------------------------------------- MLflow


def open_sweep_run(
    config: Any, name: str, stamp: str, sweep_dir: Path, state: dict[str, Any]
) -> dict[str, Any] | None:
    """The sweep's MLflow parent run (in the members' MLflow experiment); None without MLflow."""
    if not config.mlflow.enabled:
        return None
    from mlflow.tracking import MlflowClient

    from paretune.platform.parent_run import (
        absolute_tracking_uri,
        artifact_location,
        enable_sqlite_wal,
    )

    uri = absolute_tracking_uri(config.mlflow.tracking_uri)
    enable_sqlite_wal(uri)
    client = MlflowClient(tracking_uri=uri)
    exp_name = config.mlflow.experiment or name
    exp = client.get_experiment_by_name(exp_name)
    exp_id = (
        exp.experiment_id
        if exp is not None
        else client.create_experiment(exp_name, artifact_location(uri, exp_name))
    )
    run = client.create_run(
        exp_id,
        run_name=f"sweep-{name}-{stamp}",
        tags={"paretune.kind": "sweep", "paretune.sweep_dir": str(sweep_dir)},
    )
    for key, value in list(state["members"].items())[:100]:
        client.log_param(
            run.info.run_id, f"member.{key}"[:250], json.dumps(value["overrides"])[:500]
        )
    return {"tracking_uri": uri, "experiment_id": exp_id, "run_id": run.info.run_id}


def finish_sweep_run(sweep_dir: Path, state: dict[str, Any], rep: SweepReport) -> None:
    """Nest the members' parent runs under the sweep run, log the report, end the run."""
    info = state.get("mlflow")
    if not info:
        return
    try:
        from mlflow.tracking import MlflowClient

        from paretune.platform.experiment import read_state

        client = MlflowClient(tracking_uri=info["tracking_uri"])
        run_id = info["run_id"]
        for m in rep.members:
            exp = state["members"][m.name].get("experiment_dir")
            parent = read_state(Path(exp)).get("parent_run_id") if exp else None
            if parent:
                client.set_tag(parent, "mlflow.parentRunId", run_id)
                client.set_tag(parent, "paretune.sweep", run_id)
                client.set_tag(parent, "paretune.sweep.member", m.name)
            for key, value in (("hypervolume", m.hypervolume), ("gap", m.gap)):
                if math.isfinite(value):
                    client.log_metric(run_id, f"{m.name}.{key}"[:250], value)
        if rep.merged is not None:
            client.log_metric(run_id, "merged.hypervolume", rep.merged.hypervolume)
        for p in rep.paths.values():
            if Path(p).is_file():
                client.log_artifact(run_id, str(p))
        ok = all(m.status == "finished" for m in rep.members)
        client.set_terminated(run_id, status="FINISHED" if ok else "FAILED")
    except Exception as exc:  # noqa: BLE001 - the members are recorded; the sweep run is extra
        logger.warning("could not finish the sweep's MLflow run (%s)", exc)
