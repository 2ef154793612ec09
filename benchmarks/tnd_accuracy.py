"""Single-objective check on the NB201 table: accuracy only, as NB201's own searcher tables.

Each engine searches CIFAR-10 with one objective, ``accuracy`` (max), seeing
``cifar10_valid_200``; a run is scored by the ``cifar10_test_200`` accuracy of the architecture
with the best valid accuracy among its first ``budget`` evaluations (the pick a user would make).
Reference points (NB201 paper, 12-epoch signal, so not the same protocol): REINFORCE 93.85,
regularized evolution 93.92, optimum 94.37. Usage::

    python benchmarks/tnd_accuracy.py --seeds 10 --budgets 100,300,1000
    python benchmarks/tnd_accuracy.py --engines tnd --engine-param tnd.reward=pareto

It reuses :mod:`benchmarks.nb201_bench` (table loading, the valid/test split) and the engine
runners of :mod:`benchmarks.search_quality`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import search_quality as sq  # noqa: E402
from benchmarks.nb201_bench import NB201Benchmark  # noqa: E402
from paretune.objectives.base import ObjectiveSet  # noqa: E402
from paretune.objectives.nb201_table import load_table, resolve_table_path  # noqa: E402
from paretune.search_algos import engine_names  # noqa: E402

DEFAULT_ENGINES = ("random", "regularized_evolution", "optuna_tpe", "tnd")
_BENCH: dict[str, AccuracyBench] = {}


class AccuracyBench:
    """An NB201 benchmark reduced to one objective, valid accuracy (what the engines see)."""

    def __init__(self, table_path: str, dataset: str = "cifar10") -> None:
        self.inner = NB201Benchmark(load_table(table_path), "acc-params", dataset)
        self.space = self.inner.space
        self.objectives = ObjectiveSet.of(("accuracy", "max"))

    def values(self, arch) -> dict[str, float]:
        return {"accuracy": float(self.inner.search_accuracy[self.inner.row[tuple(arch)]])}

    def best_test_accuracy(self, archs) -> float:
        return self.inner.best_test_accuracy(archs)


def _bench(table_path: str, dataset: str) -> AccuracyBench:
    key = f"{table_path}:{dataset}"
    if key not in _BENCH:
        _BENCH[key] = AccuracyBench(table_path, dataset)
    return _BENCH[key]


def run_job(job: dict[str, Any]) -> list[dict[str, Any]]:
    bench = _bench(job["table"], job["dataset"])
    params = dict(job["params"])
    if job["budget_param"]:
        params["budget"] = max(job["budgets"])
    archs = sq.run_engine(bench, job["engine"], job["seed"], max(job["budgets"]), params)[0]
    return [
        {
            "engine": job["engine"],
            "seed": job["seed"],
            "budget": b,
            "test_acc": bench.best_test_accuracy(archs[:b]),
            "unique": len(set(archs[:b])),
        }
        for b in job["budgets"]
    ]


def main(argv: list[str] | None = None) -> None:
    def csv_list(text: str) -> list[str]:
        return [t.strip() for t in text.split(",") if t.strip()]

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engines", type=csv_list, default=list(DEFAULT_ENGINES))
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument(
        "--budgets", type=lambda t: sorted({int(x) for x in csv_list(t)}), default=[100, 300, 1000]
    )
    p.add_argument("--engine-param", action="append", default=[], metavar="ENGINE.KEY=VALUE")
    p.add_argument("--dataset", default="cifar10", choices=["cifar10", "cifar100", "imagenet16"])
    p.add_argument(
        "--table", default=None, help="NB201 table file or folder (default: $PARETUNE_NB201)"
    )
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    args = p.parse_args(argv)
    available = engine_names() + list(sq.OPTUNA_ENGINES)
    unknown = [e for e in args.engines if e not in available]
    if unknown:
        p.error(f"--engines: unknown {unknown} (available: {available})")
    try:
        args.table = str(resolve_table_path(args.table))
    except FileNotFoundError as e:
        p.error(str(e))
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    params = sq.parse_engine_params(args.engine_param, args.engines)
    _bench(args.table, args.dataset)  # built before forking: the workers inherit it
    jobs = []
    for engine in args.engines:
        per_budget = sq._takes_budget(engine)
        groups = [[b] for b in args.budgets] if per_budget else [list(args.budgets)]
        for seed in range(args.seeds):
            for budgets in groups:
                jobs.append(
                    {
                        "table": args.table,
                        "dataset": args.dataset,
                        "engine": engine,
                        "seed": seed,
                        "budgets": budgets,
                        "budget_param": per_budget,
                        "params": params[engine],
                    }
                )
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    if args.jobs > 1:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            for result in pool.map(run_job, jobs):
                rows.extend(result)
    else:
        for job in jobs:
            rows.extend(run_job(job))
    ds = args.dataset
    print(
        f"NB201 single objective: accuracy (max) on {ds}_valid_200; score = {ds}_test_200 of the "
        f"best-valid arch found; seeds 0..{args.seeds - 1}; mean ± std (min)"
    )
    header = ["engine"] + [f"budget {b}" for b in args.budgets]
    table = []
    for engine in args.engines:
        cells = [engine]
        for b in args.budgets:
            acc = np.array(
                [r["test_acc"] for r in rows if r["engine"] == engine and r["budget"] == b]
            )
            std = acc.std(ddof=1) if len(acc) > 1 else 0.0
            cells.append(f"{acc.mean():.2f} ± {std:.2f} ({acc.min():.2f})")
        table.append(cells)
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(header)]
    for line in [header, ["-" * w for w in widths], *table]:
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(line, widths, strict=True))
            )
        )
    print(f"\n{len(jobs)} runs in {time.perf_counter() - start:.1f} s wall")


if __name__ == "__main__":
    main()
