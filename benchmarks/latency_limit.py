"""Latency-limited search on the NB201 table, with and without predictor screening.

Objectives: CIFAR-10 valid accuracy (max) and a device's table latency (min) with a limit (by
default the 25th percentile of that device's latencies, so 3 architectures in 4 are
infeasible). Engines run through ask/tell for ``--budget`` trials per seed:

- without screening: every proposal is a trial;
- with screening: a :class:`ScreenedEngine` asks a GCN latency predictor first (trained on
  ``--train`` random architectures of the table, none chosen by the search) and rejects
  candidates predicted beyond the limit by more than ``--margin``, without a trial.

Printed per engine and mode (mean ± std over seeds): trials spent on infeasible architectures,
feasible trials, candidates screened out (and how many of those were in fact feasible), the best
feasible test accuracy found, and whether the reported Pareto front (the platform's
``build_report``, constrained domination) holds only architectures within the limit.

Usage::

    python benchmarks/latency_limit.py --seeds 0,1,2,3,4 --budget 100
    python benchmarks/latency_limit.py --device raspi4 --quantile 0.1 --margin 0.05
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paretune.objectives.base import Objective, ObjectiveSet  # noqa: E402
from paretune.objectives.nb201_table import resolve_table_path  # noqa: E402
from paretune.objectives.predictor import LatencyPredictor, PredictorSettings  # noqa: E402
from paretune.objectives.table import TableEvaluator  # noqa: E402
from paretune.platform.report import TrialRow, build_report  # noqa: E402
from paretune.search_algos import make_engine  # noqa: E402
from paretune.search_algos.screening import ScreenedEngine  # noqa: E402
from paretune.spaces.nb201 import NB201Space  # noqa: E402

ENGINE_PARAMS = {"regularized_evolution": {"population_size": 20, "sample_size": 5}}


def run(
    engine_name: str,
    seed: int,
    budget: int,
    objectives: ObjectiveSet,
    lookup: dict[tuple[int, ...], tuple[float, float, float]],
    predict: dict[tuple[int, ...], float] | None,
    margin: float,
    max_screens: int,
) -> dict[str, float]:
    space = NB201Space()
    engine = make_engine(
        engine_name, space, objectives, seed=seed, **ENGINE_PARAMS.get(engine_name, {})
    )
    if predict is not None:
        engine = ScreenedEngine(engine, predict.__getitem__, margin=margin, max_screens=max_screens)
    limit = objectives["latency"].limit
    rows: list[TrialRow] = []
    for i in range(budget):
        proposal = engine.ask()
        if proposal is None:
            break
        acc, lat, test_acc = lookup[proposal.arch]
        values = {"accuracy": acc, "latency": lat}
        engine.tell(proposal, values)
        rows.append(
            TrialRow(
                str(i), i, space.encode(proposal.arch), values, True, extras={"test": test_acc}
            )
        )
    report = build_report(rows, objectives)
    feasible = [r for r in rows if r.values["latency"] <= limit]
    screened = engine.screened_records() if isinstance(engine, ScreenedEngine) else []
    return {
        "trials": len(rows),
        "infeasible_trials": len(rows) - len(feasible),
        "feasible_trials": len(feasible),
        "screened": len(screened),
        "screened_feasible": sum(lookup[r.proposal.arch][1] <= limit for r in screened),
        "best_feasible_test": max((r.extras["test"] for r in feasible), default=float("nan")),
        "front_size": len(report.front),
        "front_within_limit": float(all(r.values["latency"] <= limit for r in report.front)),
    }


def fmt(values: list[float], digits: int = 1) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f}±{np.std(values):.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", default=None, help="NB201 table or folder ($PARETUNE_NB201)")
    parser.add_argument("--device", default="pixel3", help="latency column latency_ms_<device>")
    parser.add_argument("--quantile", type=float, default=0.25, help="limit = this quantile")
    parser.add_argument("--limit", type=float, default=None, help="limit in ms (overrides)")
    parser.add_argument("--engines", default="random,regularized_evolution")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--train", type=int, default=500, help="predictor training archs")
    parser.add_argument("--margin", type=float, default=0.0)
    parser.add_argument("--max-screens", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    table = TableEvaluator(resolve_table_path(args.table), latency_device=args.device)
    values, archs = table.matrix(["accuracy", "latency", "test_accuracy"])
    lookup = {
        a: (float(v[0]), float(v[1]), float(v[2])) for a, v in zip(archs, values, strict=True)
    }
    lat = values[:, 1]
    limit = args.limit if args.limit is not None else float(np.quantile(lat, args.quantile))
    objectives = ObjectiveSet(
        (Objective("accuracy", "max"), Objective("latency", "min", limit=limit))
    )

    rng = np.random.default_rng(12345)
    train = rng.permutation(len(archs))[: args.train]
    started = time.perf_counter()
    predictor = LatencyPredictor(PredictorSettings(seed=0)).fit(
        [archs[i] for i in train], {args.device: lat[train]}
    )
    predicted = predictor.predict(archs, args.device)
    fit_s = time.perf_counter() - started
    predict = dict(zip(archs, predicted.tolist(), strict=True))
    feasible_share = float(np.mean(lat <= limit))
    agree = float(np.mean((predicted <= limit) == (lat <= limit)))
    print(
        f"limit: latency_ms_{args.device} <= {limit:.3f} ms ({feasible_share:.0%} of the space "
        f"feasible); predictor trained on {args.train} archs in {fit_s:.0f} s, "
        f"classifies {agree:.1%} of the space correctly against the limit"
    )

    seeds = [int(s) for s in args.seeds.split(",") if s]
    engines = [e for e in args.engines.split(",") if e]
    header = (
        f"{'engine':<22} {'screening':<10} {'trials':>6} {'infeasible trials':>18} "
        f"{'feasible trials':>16} {'screened out':>13} {'of which feasible':>18} "
        f"{'best feasible test acc':>23} {'front within limit':>19}"
    )
    print(f"\nbudget {args.budget} trials, seeds {seeds}, margin {args.margin}")
    print(header)
    print("-" * len(header))
    for engine_name in engines:
        for mode in ("off", "on"):
            results = [
                run(
                    engine_name,
                    seed,
                    args.budget,
                    objectives,
                    lookup,
                    predict if mode == "on" else None,
                    args.margin,
                    args.max_screens,
                )
                for seed in seeds
            ]

            def col(key: str, results: list[dict[str, float]] = results) -> list[float]:
                return [r[key] for r in results]

            within = "yes" if all(col("front_within_limit")) else "NO"
            print(
                f"{engine_name:<22} {mode:<10} {fmt(col('trials'), 0):>6} "
                f"{fmt(col('infeasible_trials')):>18} {fmt(col('feasible_trials')):>16} "
                f"{fmt(col('screened')):>13} {fmt(col('screened_feasible')):>18} "
                f"{fmt(col('best_feasible_test'), 2):>23} {within:>19}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
