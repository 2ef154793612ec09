"""PertNAS as the paper runs it, on Ray: ``search.algorithm: pertnas`` with ``search.mode:
supernet`` (``algorithms.md`` section 1; the authors' ``search_evolutionary.py``).

The search is a graph of jobs (:class:`~paretune.search_algos.perturbation_supernet.PertNASPlan`):
*train* jobs build a network from scratch (a member's compact network with one edge expanded,
a lineage's partial supernet, a retrain after a fine or topology selection), train it and write
its weights and optimizer state to ``<experiment>/phases/pertnas_supernet/ckpt/<key>/``; *value*
jobs read such a checkpoint, mask one option, restore weights and optimizer state, fine-tune F
steps and report the deltas of every objective (:mod:`paretune.objectives.pertnas_valuation`).
Every job is one Ray Tune trial of one Tuner whose searcher (:class:`JobSearcher`) hands out
whatever the results so far make ready: a member's valuations start as soon as its own network
is trained, lineages advance on their own, with no generation barrier; valuations of one
checkpoint run in parallel on as many workers (GPUs) as Ray has. A finished job's result is
``results/<key>.json`` there, so a resumed phase (``paretune resume``) skips it; once every
lineage has its genotype, ``handover.json`` records them and a later call returns at once.

The final genotypes (one per lineage) are retrained stand-alone by ``evaluator.kind: train``
as the search's ordinary trials (tracked in MLflow and reported).

MLflow: every job is a child run of the parent run (tag ``paretune.role = phase``; params
``stage``, ``edge``, ``masked_option``, ``F``, ``checkpoint``; metrics ``delta_<objective>``,
``accuracy_with``, ``accuracy_without``; train jobs: ``accuracy`` and costs), and the parent
run gets per stage the valuation matrices as CSV and heat maps (``pertnas_supernet/``) and
the lineages' selections (``record.json``).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.search import Searcher

from paretune.objectives.pertnas_valuation import check_params
from paretune.platform.config import ConfigError, ExperimentConfig
from paretune.platform.phase_checks import check_phase_config
from paretune.platform.phase_trials import (
    final_searcher,
    fit_trials,
    log_batches,
    parent_run_id,
    start_phase_run,
    write_record,
)
from paretune.platform.prepare import Prepared
from paretune.platform.searcher import ParetoSearcher
from paretune.search_algos.perturbation_supernet import PertNASPlan, matrix_csv

NAME = "pertnas_supernet"
HANDOVER = "handover.json"
SPACES = ("nb201", "darts")


def job_trainable(cfg: dict[str, Any]) -> None:
    """One job (train or value) as a Ray Tune function trainable."""
    import torch

    from paretune.objectives.pertnas_valuation import run_job
    from paretune.objectives.train import TrainEvaluator

    c = cfg["pertnas"]
    job = c["job"]
    root = Path(c["root"])
    out = root / "results" / f"{job['key']}.json"
    if out.is_file():  # finished before (a restarted trial): report it again
        result = json.loads(out.read_text())
    else:
        ev = TrainEvaluator(**c["evaluator"])
        torch.set_num_threads(max(1, int(c["threads"])))
        names = [n for n, _ in c["objectives"]]
        result = run_job(ev, job, c["params"], names, c["seed"], root)
    metrics: dict[str, Any] = {"done": 1, "kind": job["kind"], "stage": job["stage"]}
    for k, v in result.get("delta", {}).items():
        metrics[f"delta_{k}"] = v
    for k in ("accuracy", "accuracy_with", "accuracy_without", "edge", "option", "steps"):
        if k in result:
            metrics[k] = result[k]
    tune.report(metrics)


class JobSearcher(Searcher):
    """Hands Ray Tune the plan's ready jobs, one per trial; finishes when the plan has none
    left and none runs (or a job failed ``max_failures + 1`` times)."""

    def __init__(
        self,
        plan: PertNASPlan,
        root: Path,
        results: dict[str, Any],
        common: dict[str, Any],
        max_failures: int,
    ) -> None:
        super().__init__(metric="done", mode="max")
        self.plan = plan
        self.root = root
        self.results = results
        self.common = common
        self.max_failures = max(0, int(max_failures))
        self.running: dict[str, str] = {}
        self.failures: dict[str, int] = {}
        self.error: str | None = None

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.error is not None:
            return None if self.running else Searcher.FINISHED
        busy = set(self.running.values())
        for job in self.plan.frontier(self.results):
            if job["key"] not in busy:
                self.running[trial_id] = job["key"]
                return {"pertnas": {**self.common, "job": job}}
        return None if self.running else Searcher.FINISHED

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        key = self.running.pop(trial_id, None)
        if key is None:
            return
        path = self.root / "results" / f"{key}.json"
        if path.is_file():
            self.results[key] = json.loads(path.read_text())
            return
        self.failures[key] = self.failures.get(key, 0) + 1
        if self.failures[key] > self.max_failures:
            self.error = f"job {key} failed {self.failures[key]} times"


class PertNASSupernetPhase:
    """The phase object of :mod:`paretune.platform.phases`."""

    name = NAME

    def __init__(self, config: ExperimentConfig) -> None:
        self.config = config
        self.objectives, self.params = check_phase_config(
            config,
            mode="pertnas's supernet mode",
            evaluator_reason="trains its networks with, and retrains its final genotypes by, "
            "evaluator.kind = 'train'",
            spaces=SPACES,
            networks="search networks",
            check_params=check_params,
            params_args=lambda: (config.space.kind, config.search.num_samples),
        )
        if len(self.params["lineages"]) > config.search.num_samples:
            raise ConfigError(
                f"search.params.lineages: {len(self.params['lineages'])} lineages, more than "
                f"search.num_samples = {config.search.num_samples} final genotypes retrained"
            )

    def placeholder_searcher(self, prepared: Prepared) -> ParetoSearcher:
        """The searcher before the phase has run (its state loads into it: reports, resume)."""
        return final_searcher(prepared, self.config)

    # ------------------------------------------------------------------ plan
    def edge_options(self, prepared: Prepared) -> list[list[int]]:
        """Per search edge, the options that may be placed on it (``none`` excluded: an edge
        without options is the authors' zero placeholder)."""
        space = prepared.space
        if self.config.space.kind == "nb201":
            opts = [[int(k) for k in a if k != 0] for a in space.allowed]
            bad = [e for e, o in enumerate(opts) if not o]
            if bad:
                raise ConfigError(
                    f"space: NB201 edge {space.decisions[bad[0]].name!r} allows only 'none'; "
                    "pertnas's supernet mode needs an operation on every edge"
                )
            return opts
        ops = sorted(
            {
                int(k)
                for d, a in zip(space.decisions, space.allowed, strict=True)
                if "_op" in d.name
                for k in a
                if k != 0
            }
        )
        if not ops:
            raise ConfigError("space: the DARTS restriction leaves no operation but 'none'")
        return [list(ops) for _ in range(14)]

    def plan(self, prepared: Prepared) -> PertNASPlan:
        return PertNASPlan.from_params(
            self.edge_options(prepared),
            len(self.op_names()),
            self.objectives,
            self.params,
            self.config.seed,
        )

    def op_names(self) -> tuple[str, ...]:
        if self.config.space.kind == "darts":
            from paretune.spaces.darts_ops import DARTS_OPS

            return tuple(DARTS_OPS)
        from paretune.spaces.nb201_ops import NB201_OPS

        return tuple(NB201_OPS)

    def edge_names(self) -> list[str]:
        if self.config.space.kind == "darts":
            from paretune.spaces.darts import DARTS_EDGES
        else:
            from paretune.spaces.nb201_ops import NB201_EDGES as DARTS_EDGES
        return [f"{s}->{d}" for s, d in DARTS_EDGES]

    # ------------------------------------------------------------------ the phase
    def run(
        self,
        prepared: Prepared,
        searcher: Any,
        experiment_dir: Path,
        state: dict[str, Any],
        *,
        verbose: int = 1,
    ) -> tuple[Prepared, Any]:
        root = Path(experiment_dir).resolve() / "phases" / NAME
        root.mkdir(parents=True, exist_ok=True)
        handover = root / HANDOVER
        plan = self.plan(prepared)
        if not handover.is_file():
            results = self.read_results(root)
            if plan.finals(results) is None:
                self._fit(prepared, plan, root, results, verbose)
            finals = plan.finals(results)
            if finals is None:
                raise ConfigError(
                    f"pertnas supernet phase stopped before its end ({len(results)} jobs done); "
                    f"see {root}; `paretune resume {experiment_dir}` continues it"
                )
            self._log_mlflow(state, plan, results, root)
            record = self.handover_record(prepared, plan, results, finals)
            write_record(handover, record)
        record = json.loads(handover.read_text())
        return prepared, final_searcher(prepared, self.config, record["archs"], record["meta"])

    def handover_record(
        self, prepared: Prepared, plan: PertNASPlan, results: dict[str, Any], finals: list
    ) -> dict[str, Any]:
        from paretune.objectives.pertnas_valuation import arch_of_options

        archs, meta, seen = [], [], set()
        for i, options in enumerate(finals):
            arch = list(arch_of_options(prepared.space, options))
            if tuple(arch) in seen:
                continue
            seen.add(tuple(arch))
            archs.append(arch)
            weights = ",".join(f"{k}={v:.3g}" for k, v in plan.lineages[i].items())
            meta.append({"lineage": i, "lineage_weights": weights})
        return {
            "archs": archs,
            "meta": meta,
            "finals": finals,
            "lineages": plan.lineages,
            "n_iter": plan.n_iter,
            "jobs": len(results),
            "train_samples": sum(int(r.get("train_samples", 0)) for r in results.values()),
        }

    def _common(self, prepared: Prepared, root: Path) -> dict[str, Any]:
        threads = max(1, int(self.config.resources.cpu))
        return {
            "evaluator": {**prepared.evaluator_settings, "threads": threads},
            "params": self.params,
            "objectives": self.objectives,
            "seed": self.config.seed,
            "root": str(root),
            "threads": threads,
        }

    def _fit(
        self,
        prepared: Prepared,
        plan: PertNASPlan,
        root: Path,
        results: dict[str, Any],
        verbose: int,
    ) -> None:
        cfg = self.config
        searcher = JobSearcher(
            plan, root, results, self._common(prepared, root), cfg.failure.max_failures
        )
        attempt = len(list(root.glob("jobs-*")))
        # a fresh Tune run per attempt: the searcher's plan restarts from the finished jobs
        fit_trials(
            job_trainable,
            storage=root,
            name=f"jobs-{attempt}",
            resources={"cpu": cfg.resources.cpu, "gpu": cfg.resources.gpu},
            max_failures=cfg.failure.max_failures,
            verbose=min(verbose, 1),
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                num_samples=-1,
                max_concurrent_trials=max(1, int(cfg.search.max_concurrent or 1)),
            ),
        )
        results.update(self.read_results(root))
        if searcher.error is not None and plan.finals(results) is None:
            raise ConfigError(
                f"pertnas supernet phase: {searcher.error}; see {root}/jobs-{attempt}; "
                "`paretune resume` continues from the finished jobs"
            )

    @staticmethod
    def read_results(root: Path) -> dict[str, Any]:
        out = {}
        for path in sorted((Path(root) / "results").glob("*.json")):
            try:
                out[path.stem] = json.loads(path.read_text())
            except ValueError:
                continue  # a torn write cannot happen (atomic), but never trust it
        return out

    # ------------------------------------------------------------------ MLflow
    def stage_matrices(
        self, plan: PertNASPlan, results: dict[str, Any]
    ) -> dict[str, dict[str, Any]]:
        """Per stage, the valuation matrices (objective -> edges x ops): ``expand`` (mean
        over the population, running mean over the iterations), with ``n_iter > 1`` also
        ``expand_iter<it>`` (each iteration's own), ``lineage<i>_fine`` and ``lineage<i>_topology`` (each lineage's
        own valuations; topology's column is the edge's single operation)."""
        import numpy as np

        out: dict[str, dict[str, Any]] = {"expand": plan.matrix(results)}
        if plan.n_iter > 1:
            for it in range(plan.n_iter):
                out[f"expand_iter{it}"] = plan.iteration_matrix(results, it)
        shape = (plan.num_edges, plan.num_ops)
        for r in results.values():
            job = r.get("job", {})
            if job.get("kind") != "value" or job.get("stage") == "expand":
                continue
            name = f"lineage{job['lineage']}_{job['stage']}"
            mats = out.setdefault(name, {n: np.full(shape, np.nan) for n, _ in plan.objectives})
            e = int(job["edge"])
            k = job["option"]
            if k is None:  # topology: the removed edge's single operation
                k = int(job["options"][e][0])
            for n in mats:
                mats[n][e, int(k)] = float(r["delta"][n])
        return out

    def _log_mlflow(
        self, state: dict[str, Any], plan: PertNASPlan, results: dict[str, Any], root: Path
    ) -> None:
        run_id = parent_run_id(self.config, state)
        if run_id is None:
            return
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        from paretune.objectives.pertnas_valuation import heatmap_png

        client = MlflowClient(tracking_uri=self.config.mlflow.tracking_uri)
        logged_path = root / "mlflow_logged.json"
        logged = set(json.loads(logged_path.read_text())) if logged_path.is_file() else set()
        edges, ops = self.edge_names(), self.op_names()
        # the effective settings of the search (defaults included) on the parent run
        client.log_batch(
            run_id,
            params=[
                Param(f"{NAME}.n_iter", str(plan.n_iter)),
                Param(f"{NAME}.population", str(plan.population)),
            ],
        )
        try:
            for key in sorted(set(results) - logged):
                r = results[key]
                job = r.get("job", {})
                job_run = start_phase_run(
                    client, state, f"{NAME}:{key}", NAME, job_kind=str(job.get("kind"))
                )
                params = {"job": key, "stage": job.get("stage"), "kind": job.get("kind")}
                for k in ("iteration", "member", "lineage", "node"):
                    if k in job:
                        params[k] = job[k]
                metrics: dict[str, float] = {}
                if job.get("kind") == "value":
                    e, k = int(job["edge"]), job["option"]
                    params.update(
                        edge=edges[e],
                        edge_index=e,
                        masked_option="(edge removed)" if k is None else ops[int(k)],
                        F=job["steps"],
                        checkpoint=job["checkpoint"],
                    )
                    metrics.update({f"delta_{n}": v for n, v in r["delta"].items()})
                    metrics["accuracy_with"] = r["accuracy_with"]
                    metrics["accuracy_without"] = r["accuracy_without"]
                else:
                    params["checkpoint"] = r.get("checkpoint", "")
                    metrics["accuracy"] = r["accuracy"]
                    metrics.update(r.get("costs", {}))
                    metrics["train_samples"] = r.get("train_samples", 0)
                log_batches(
                    client,
                    job_run,
                    metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()],
                    params=[Param(k, str(v)[:500]) for k, v in params.items()],
                )
                client.set_terminated(job_run, status="FINISHED")
                logged.add(key)
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                for stage, mats in self.stage_matrices(plan, results).items():
                    (folder / f"valuation_{stage}.csv").write_text(matrix_csv(mats, edges, ops))
                    for n, m in mats.items():
                        heatmap_png(
                            m,
                            edges,
                            ops,
                            f"{stage}: delta {n}",
                            folder / f"valuation_{stage}_{n}.png",
                        )
                (folder / "record.json").write_text(
                    json.dumps({"lineages": plan.records(results)}, indent=1, default=str)
                )
                client.log_artifacts(run_id, str(folder), artifact_path=NAME)
        finally:
            write_record(logged_path, sorted(logged))


def make_phase(config: ExperimentConfig) -> PertNASSupernetPhase:
    """The phase of ``search.algorithm: pertnas`` with ``search.mode: supernet``."""
    return PertNASSupernetPhase(config)


__all__ = ["JobSearcher", "PertNASSupernetPhase", "job_trainable", "make_phase"]
