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

The pictures live in ``artifacts_cells``, the engine's inspection tables in
``artifacts_inspection`` and the front's models in ``artifacts_models``; this module logs the
parent run and the ``pareto`` tags and gathers the public names of the others.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paretune.platform.artifacts_cells import (
    CELL_ARTIFACT,
    OP_STYLE,
    arch_decisions,
    cell_edges,
    cell_figure,
    cell_png,
    darts_cell_figure,
    decisions_figure,
    draw_cell_pictures,
    log_cell_pictures,
    log_trial_artifacts,
)
from paretune.platform.artifacts_inspection import (
    SEARCHER_ARTIFACTS,
    inspection_heatmap,
    searcher_state_from_dir,
    write_inspection_tables,
)
from paretune.platform.artifacts_models import (
    EXAMPLE_BATCH,
    MAX_TAG,
    MODEL_NAME,
    WEIGHTS_FILE,
    WEIGHTS_META_FILE,
    LoggedFrontModel,
    default_build,
    example_input,
    load_trial_model,
    log_front_models,
)
from paretune.platform.artifacts_models import (
    _tracking_uri as _tracking_uri,
)

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from paretune.platform.config import ExperimentConfig
    from paretune.platform.report import SearchReport


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


__all__ = [
    "CELL_ARTIFACT",
    "EXAMPLE_BATCH",
    "LoggedFrontModel",
    "MAX_TAG",
    "MODEL_NAME",
    "OP_STYLE",
    "SEARCHER_ARTIFACTS",
    "WEIGHTS_FILE",
    "WEIGHTS_META_FILE",
    "arch_decisions",
    "cell_edges",
    "cell_figure",
    "cell_png",
    "darts_cell_figure",
    "decisions_figure",
    "default_build",
    "draw_cell_pictures",
    "example_input",
    "inspection_heatmap",
    "load_trial_model",
    "log_cell_pictures",
    "log_front_models",
    "log_parent_summary",
    "log_trial_artifacts",
    "parent_note",
    "parent_tags",
    "searcher_state_from_dir",
    "tag_pareto",
    "write_inspection_tables",
]
