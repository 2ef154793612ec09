"""Trials per second through Ray Tune on the tabular trainable, measured side by side.

Two comparisons, each from one run of this script (same machine, same moment, interleaved
repeats, median of each):

1. searcher overhead: ``ParetoSearcher`` (paretune's adapter around the random engine) against
   Ray's own default random generator (``BasicVariantGenerator`` with ``tune.choice`` per
   decision), both without tracking. Target: ratio >= 0.95.
2. tracking overhead: the full ``paretune`` run (``launcher.run``) with MLflow tracking on
   (SQLite store) against the same run with tracking off. Target: ratio >= 0.80.

With tracking on, each run starts its own MLflow writer process (see
``paretune.platform.mlflow_writer``; counted) and writes every trial run through MlflowClient's
public calls; ``PARETUNE_MLFLOW_SQL_INSERT=1`` measures the opt-in SQL inserts instead. The
driver's own MLflow import happens once, in the warm-up. ``--only tracking`` (or ``searcher``)
runs one comparison.

Usage::

    PARETUNE_NB201=../shared/benchmarks/nb201 python benchmarks/overhead.py --trials 300 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def base_config(args: argparse.Namespace, workdir: Path, tracking: bool, tag: str) -> dict:
    return {
        "name": f"overhead-{tag}",
        "seed": 0,
        "evaluator": {"kind": "table", "path": args.table},
        "objectives": [
            {"name": "accuracy", "direction": "max"},
            {"name": "latency", "direction": "min"},
            {"name": "energy", "direction": "min"},
        ],
        "search": {"algorithm": "random", "num_samples": args.trials},
        "resources": {"cpu": args.cpu},
        "storage": {"path": str(workdir / "runs")},
        "mlflow": {"enabled": tracking, "tracking_uri": f"sqlite:///{workdir / 'mlflow.db'}"},
    }


def time_searcher(args: argparse.Namespace, workdir: Path, which: str, rep: int) -> float:
    """Trials per second of ``tuner.fit()`` with the paretune adapter or Ray's default generator."""
    from ray import tune

    from paretune.platform.config import config_from_dict
    from paretune.platform.prepare import make_searcher, prepare
    from paretune.platform.tuning import make_trainable

    cfg = config_from_dict(base_config(args, workdir, False, f"{which}-{rep}"))
    prepared = prepare(cfg)
    # The same Tune settings for both: as many trials at once as there are CPUs for them.
    in_flight = max(1, int(os.cpu_count() / args.cpu))
    if which == "paretune":
        tune_config = tune.TuneConfig(
            search_alg=make_searcher(prepared),
            num_samples=args.trials,
            max_concurrent_trials=in_flight,
            reuse_actors=True,
        )
        param_space = {}
    else:
        tune_config = tune.TuneConfig(
            num_samples=args.trials, max_concurrent_trials=in_flight, reuse_actors=True
        )
        param_space = {d.name: tune.choice(list(d.options)) for d in prepared.space.decisions}
    tuner = tune.Tuner(
        make_trainable(prepared, workdir / "runs" / f"{which}-{rep}"),
        param_space=param_space,
        tune_config=tune_config,
        run_config=tune.RunConfig(
            name=f"{which}-{rep}", storage_path=str(workdir / "runs"), verbose=0
        ),
    )
    start = time.perf_counter()
    grid = tuner.fit()
    elapsed = time.perf_counter() - start
    assert len(grid) == args.trials and not grid.errors, (
        f"{which}: {len(grid)} trials, errors {grid.errors}"
    )
    return args.trials / elapsed


def time_platform(args: argparse.Namespace, workdir: Path, tracking: bool, rep: int) -> float:
    """Trials per second of the whole ``paretune`` run, with MLflow tracking on or off."""
    from paretune.platform.config import config_from_dict
    from paretune.platform.launcher import run

    cfg = config_from_dict(
        base_config(args, workdir, tracking, f"{'mlflow' if tracking else 'plain'}-{rep}")
    )
    start = time.perf_counter()
    result = run(cfg, verbose=0)
    elapsed = time.perf_counter() - start
    assert len(result.report.rows) == args.trials and result.report.num_failed == 0
    return args.trials / elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cpu", type=float, default=1.0, help="CPUs per trial")
    p.add_argument("--table", default=os.environ.get("PARETUNE_NB201"))
    p.add_argument("--only", choices=("searcher", "tracking"), help="run one comparison")
    args = p.parse_args()
    if not args.table:
        raise SystemExit("set PARETUNE_NB201 or --table to the NB201 table folder")
    args.table = str(Path(args.table).resolve())

    import ray

    # address="local": a Ray of its own, never a cluster that another job on the machine started.
    ray.init(
        address="local",
        num_cpus=os.cpu_count(),
        include_dashboard=False,
        logging_level="ERROR",
        log_to_driver=False,
    )
    runs: dict[str, list[float]] = {
        k: [] for k in ("ray_default", "paretune", "untracked", "tracked")
    }
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        # Warm-up (Ray workers, imports, table cache, the MLflow store), not counted.
        warm = argparse.Namespace(**{**vars(args), "trials": 20})
        time_searcher(warm, workdir, "paretune", -1)
        if args.only != "searcher":
            time_platform(warm, workdir, True, -1)
        for rep in range(args.repeats):
            # Alternate the order so that drift on a noisy machine hits both sides alike.
            if args.only != "tracking":
                order = ["ray_default", "paretune"] if rep % 2 == 0 else ["paretune", "ray_default"]
                for which in order:
                    runs[which].append(time_searcher(args, workdir, which, rep))
            if args.only != "searcher":
                order = [False, True] if rep % 2 == 0 else [True, False]
                for tracking in order:
                    runs["tracked" if tracking else "untracked"].append(
                        time_platform(args, workdir, tracking, rep)
                    )
    ray.shutdown()

    med = {k: statistics.median(v) for k, v in runs.items() if v}
    print(
        f"\nTrials per second through Ray Tune, tabular NB201 trainable, {args.trials} trials per run, "
        f"{args.cpu} CPU per trial, {os.cpu_count()} CPUs, median of {args.repeats} interleaved runs\n"
    )
    header = f"{'comparison':<34}{'baseline':>12}{'candidate':>12}{'ratio':>8}{'target':>9}  runs (trials/s)"
    print(header)
    print("-" * len(header))
    rows = [
        ("ParetoSearcher vs Ray default", "ray_default", "paretune", 0.95),
        ("MLflow tracking on vs off", "untracked", "tracked", 0.80),
    ]
    for label, base, cand, target in rows:
        if base not in med:
            continue
        ratio = med[cand] / med[base]
        detail = f"{base}: {', '.join(f'{x:.1f}' for x in runs[base])}; {cand}: {', '.join(f'{x:.1f}' for x in runs[cand])}"
        verdict = "ok" if ratio >= target else "MISSED"
        # Each repeat's two runs are next to each other: their ratio is less exposed to drift.
        paired = statistics.median(c / b for b, c in zip(runs[base], runs[cand], strict=True))
        print(
            f"{label:<34}{med[base]:>12.1f}{med[cand]:>12.1f}{ratio:>8.2f}{'>= ' + str(target):>9}  {verdict}; {detail}; median of paired ratios {paired:.2f}"
        )


if __name__ == "__main__":
    main()
