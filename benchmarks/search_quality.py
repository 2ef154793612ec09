"""Search quality on the NB201 table: hypervolume gap per objective set, engine and budget.

Runs engines directly through ask/tell against the table (no Ray), for several seeds, and prints
``1 - HV(found)/HV(true front)`` under the convention of :mod:`benchmarks.nb201_bench`, with the
test accuracy of the architecture the search would pick (best valid accuracy). Usage::

    python benchmarks/search_quality.py --seeds 10 --budgets 100,300,1000 --out results.csv
    python benchmarks/search_quality.py --engines random,regularized_evolution \\
        --engine-param regularized_evolution.population_size=50
    python benchmarks/search_quality.py --engines pertnas,tnd,optuna_gp --budgets 50,100,300 \\
        --in-flight 1,8

``--in-flight K`` keeps K proposals outstanding and tells their results back in a seeded random
order, as a cluster with K workers would (Optuna: K trials asked, told back in random order);
K = 1 is the plain ask/tell loop. ``optuna_gp`` (Optuna's Gaussian-process sampler, i.e.
Bayesian optimisation) is not among the default engines: its cost grows with the history (see
its wall time per run).

An engine is run once per seed at the largest budget and scored on the prefixes of its run (its
first 100, 300, ... results back): with one evaluation in flight and a seeded engine this is the
same as separate runs; with K in flight it is the set a user has after that many results. An
engine whose constructor takes a ``budget`` parameter is run once per budget instead, with
``budget`` set.
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.macro_bench import (  # noqa: E402
    MACRO_OBJECTIVE_SET_NAMES,
    MacroBenchmark,
    load_macro_table,
    resolve_macro_table,
)
from benchmarks.nb201_bench import OBJECTIVE_SET_NAMES, NB201Benchmark  # noqa: E402
from paretune.objectives.nb201_table import load_table, resolve_table_path  # noqa: E402
from paretune.search_algos import ENGINES, engine_names, make_engine  # noqa: E402
from paretune.search_algos.dedup import deduplicate  # noqa: E402
from paretune.spaces.base import Arch  # noqa: E402

OPTUNA_ENGINES = ("optuna_nsga2", "optuna_tpe", "optuna_gp")
DEFAULT_ENGINES = ("random", "regularized_evolution", "optuna_nsga2", "optuna_tpe")

BENCHMARKS = ("nb201", "nasbench_macro")
SET_NAMES = {"nb201": OBJECTIVE_SET_NAMES, "nasbench_macro": MACRO_OBJECTIVE_SET_NAMES}
# Fills (proposals of an already measured network answered without an evaluation) per ask, as
# the platform's DeduplicatedEngine does for its engines on spaces with duplicates
# (NAS-Bench-Macro); Optuna's samplers run through Ray get no such wrapper, nor do they here.
MAX_FILLS = 50

# Benchmarks built in the parent before the worker processes fork (inherited, not pickled).
_BENCHES: dict[tuple[str, str, str], Any] = {}


def _bench(table_path: str, objective_set: str, dataset: str) -> Any:
    key = (table_path, objective_set, dataset)
    if key not in _BENCHES:
        if dataset == "nasbench_macro":
            _BENCHES[key] = MacroBenchmark(load_macro_table(table_path), objective_set)
        else:
            _BENCHES[key] = NB201Benchmark(load_table(table_path), objective_set, dataset)
    return _BENCHES[key]


def _tell_order(seed: int, in_flight: int) -> np.random.Generator:
    """The seeded order in which outstanding results come back (one stream per seed and K)."""
    return np.random.default_rng([seed, in_flight, 20230])


def run_engine(
    bench: NB201Benchmark,
    engine: str,
    seed: int,
    budget: int,
    params: dict[str, Any],
    in_flight: int = 1,
) -> tuple[list[Arch], list[float], list[float]]:
    """Evaluate up to ``budget`` proposals with ``in_flight`` outstanding; returns the archs in
    the order their results came back, and the CPU and wall time after each."""
    if engine in OPTUNA_ENGINES:
        return _run_optuna(bench, engine, seed, budget, params, in_flight)
    # As the platform runs them: a proposal of an already measured network (a space with
    # duplicates) is answered from its twin's result without an evaluation.
    eng = deduplicate(
        make_engine(engine, bench.space, bench.objectives, seed=seed, **params), MAX_FILLS
    )
    order = _tell_order(seed, in_flight)
    archs: list[Arch] = []
    times: list[float] = []
    walls: list[float] = []
    pending: list[Any] = []
    asked = 0
    start, wall_start = time.process_time(), time.perf_counter()
    while len(archs) < budget:
        while len(pending) < in_flight and asked < budget:
            proposal = eng.ask()
            if proposal is None:  # exhausted until a pending result comes back (or for good)
                break
            pending.append(proposal)
            asked += 1
        if not pending:  # exhausted with nothing outstanding
            break
        k = 0 if len(pending) == 1 else int(order.integers(len(pending)))
        proposal = pending.pop(k)
        eng.tell(proposal, bench.values(proposal.arch))
        archs.append(proposal.arch)
        times.append(time.process_time() - start)
        walls.append(time.perf_counter() - wall_start)
    return archs, times, walls


def _run_optuna(
    bench: NB201Benchmark,
    engine: str,
    seed: int,
    budget: int,
    params: dict[str, Any],
    in_flight: int = 1,
) -> tuple[list[Arch], list[float], list[float]]:
    """Optuna's NSGA-II, TPE or GP through its ask/tell interface, one categorical per decision;
    ``in_flight`` trials asked before their results are told back in a seeded random order."""
    import optuna

    if engine == "optuna_nsga2":
        sampler = optuna.samplers.NSGAIISampler(seed=seed, **params)
    elif engine == "optuna_gp":
        sampler = optuna.samplers.GPSampler(seed=seed, **params)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed, **params)
    study = optuna.create_study(
        directions=[f"{d}imize" for d in bench.objectives.modes], sampler=sampler
    )
    choices = bench.space.allowed_names()
    names = bench.objectives.names
    order = _tell_order(seed, in_flight)
    archs: list[Arch] = []
    times: list[float] = []
    walls: list[float] = []
    pending: list[tuple[Any, Arch]] = []
    asked = 0
    start, wall_start = time.process_time(), time.perf_counter()
    while len(archs) < budget:
        while len(pending) < in_flight and asked < budget:
            trial = study.ask()
            arch = bench.space.from_params(
                {d: trial.suggest_categorical(d, opts) for d, opts in choices.items()}
            )
            pending.append((trial, arch))
            asked += 1
        k = 0 if len(pending) == 1 else int(order.integers(len(pending)))
        trial, arch = pending.pop(k)
        values = bench.values(arch)
        study.tell(trial, [values[n] for n in names])
        archs.append(arch)
        times.append(time.process_time() - start)
        walls.append(time.perf_counter() - wall_start)
    return archs, times, walls


def _takes_budget(engine: str) -> bool:
    if engine in OPTUNA_ENGINES:
        return False
    return "budget" in inspect.signature(ENGINES[engine].__init__).parameters


def run_job(job: dict[str, Any]) -> list[dict[str, Any]]:
    """One engine run (one seed, one objective set), scored at every budget it covers."""
    bench = _bench(job["table"], job["objectives"], job["dataset"])
    params = dict(job["params"])
    if job["budget_param"]:
        params["budget"] = max(job["budgets"])
    if job["engine"] == "optuna_gp":  # one core per worker process (PyTorch would take them all)
        import torch

        torch.set_num_threads(1)
    archs, times, walls = run_engine(
        bench, job["engine"], job["seed"], max(job["budgets"]), params, job["in_flight"]
    )
    rows = []
    for budget in job["budgets"]:
        found = archs[:budget]
        rows.append(
            {
                "objectives": job["objectives"],
                "engine": job["engine"],
                "in_flight": job["in_flight"],
                "seed": job["seed"],
                "budget": budget,
                "evaluated": len(found),
                "unique": len({bench.space.canonical(a) for a in found}),
                "gap": bench.gap(found) if found else 1.0,
                "best_test_acc": bench.best_test_accuracy(found),
                "seconds": times[len(found) - 1] if found else 0.0,
                "wall_seconds": walls[len(found) - 1] if found else 0.0,
            }
        )
    return rows


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_engine_params(items: list[str], engines: list[str]) -> dict[str, dict[str, Any]]:
    """``["name.key=value", ...]`` -> ``{name: {key: value}}`` (values parsed as JSON when they can be)."""
    out: dict[str, dict[str, Any]] = {e: {} for e in engines}
    for item in items:
        target, eq, value = item.partition("=")
        name, dot, key = target.partition(".")
        if not eq or not dot or not key:
            raise SystemExit(f"--engine-param {item!r}: expected ENGINE.KEY=VALUE")
        if name not in out:
            raise SystemExit(
                f"--engine-param {item!r}: engine {name!r} is not among --engines {engines}"
            )
        out[name][key] = _parse_value(value)
    return out


def build_jobs(
    args: argparse.Namespace, engines: list[str], params: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    jobs = []
    for objective_set in args.objectives:
        for engine in engines:
            per_budget = _takes_budget(engine)
            budget_groups = [[b] for b in args.budgets] if per_budget else [list(args.budgets)]
            for seed, in_flight, budgets in itertools.product(
                range(args.first_seed, args.first_seed + args.seeds), args.in_flight, budget_groups
            ):
                jobs.append(
                    {
                        "table": args.table,
                        "dataset": args.dataset,
                        "objectives": objective_set,
                        "engine": engine,
                        "seed": seed,
                        "budgets": budgets,
                        "in_flight": in_flight,
                        "budget_param": per_budget,
                        "params": params[engine],
                    }
                )
    # Longest first for a balanced pool: Optuna's GP (cost grows with the history), then TPE.
    cost = {"optuna_gp": 1000, "optuna_tpe": 3, "optuna_nsga2": 2}
    jobs.sort(key=lambda j: -cost.get(j["engine"], 1) * max(j["budgets"]) ** 2)
    return jobs


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, int, int], list[dict[str, Any]]] = {}
    for r in rows:
        key = (r["objectives"], r["engine"], r["in_flight"], r["budget"])
        groups.setdefault(key, []).append(r)
    out = []
    for (objective_set, engine, in_flight, budget), rs in groups.items():
        gaps = np.array([r["gap"] for r in rs])
        accs = np.array([r["best_test_acc"] for r in rs])
        out.append(
            {
                "objectives": objective_set,
                "engine": engine,
                "in_flight": in_flight,
                "budget": budget,
                "runs": len(rs),
                "gap_mean": gaps.mean(),
                "gap_std": gaps.std(ddof=1) if len(rs) > 1 else 0.0,
                "acc_mean": accs.mean(),
                "acc_std": accs.std(ddof=1) if len(rs) > 1 else 0.0,
                "unique": np.mean([r["unique"] for r in rs]),
                "seconds": np.mean([r["seconds"] for r in rs]),
                "wall_seconds": np.mean([r["wall_seconds"] for r in rs]),
            }
        )
    return out


def format_table(
    summary: list[dict[str, Any]], args: argparse.Namespace, engines: list[str]
) -> str:
    ds = args.dataset
    seeds = f"seeds {args.first_seed}..{args.first_seed + args.seeds - 1}"
    if ds == "nasbench_macro":
        head = (
            "NAS-Bench-Macro search quality (CIFAR-10): search sees cifar10_test_acc_seed0, found "
            f"sets scored with cifar10_test_acc (mean of 3 seeds); paretune's engines are wrapped as the "
            "platform wraps them (a proposal of an already measured network is answered without an "
            f"evaluation; Optuna's are not); unique = distinct networks; {seeds}"
        )
    else:
        head = (
            f"NB201 search quality: dataset {ds}; search sees {ds}_valid_200, found sets scored "
            f"with {ds}_test_200; {seeds}"
        )
    lines = [
        head,
        "gap = 1 - HV(all evaluated)/HV(true front), objectives min-max normalised over the table, "
        "reference = front nadir + 10% of front range; lower is better",
        "test acc = test (scored) accuracy of the evaluated arch with the best seen accuracy; "
        "unique = distinct archs evaluated; cpu s / wall s = CPU / wall seconds of one run up to "
        "that budget (mean over seeds); in flight = proposals outstanding, told back in a seeded "
        "random order",
    ]
    header = (
        "engine",
        "in flight",
        "budget",
        "gap mean",
        "gap std",
        "test acc",
        "acc std",
        "unique",
        "cpu s",
        "wall s",
    )
    for objective_set in args.objectives:
        bench = _bench(args.table, objective_set, ds)
        desc = ", ".join(
            f"{o.name} {o.direction} ({o.search_column}"
            + ("" if o.search_column == o.score_column else f" -> {o.score_column}")
            + ")"
            for o in bench.bench_objectives
        )
        lines += [
            "",
            f"[{objective_set}] {desc}",
            f"true front: {len(bench.front)} points, HV {bench.true_hypervolume:.4f} at reference "
            + "("
            + ", ".join(f"{x:.3f}" for x in bench.reference)
            + ")",
        ]
        table = []
        for engine, in_flight, budget in itertools.product(engines, args.in_flight, args.budgets):
            match = [
                s
                for s in summary
                if s["objectives"] == objective_set
                and s["engine"] == engine
                and s["in_flight"] == in_flight
                and s["budget"] == budget
            ]
            if not match:
                continue
            s = match[0]
            table.append(
                (
                    engine,
                    str(in_flight),
                    str(budget),
                    f"{s['gap_mean']:.4f}",
                    f"{s['gap_std']:.4f}",
                    f"{s['acc_mean']:.2f}",
                    f"{s['acc_std']:.2f}",
                    f"{s['unique']:.0f}",
                    f"{s['seconds']:.2f}",
                    f"{s['wall_seconds']:.2f}",
                )
            )
        widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(header)]

        def fmt(cells: tuple[str, ...], widths: list[int] = widths) -> str:
            return "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )

        lines += [fmt(header), fmt(tuple("-" * w for w in widths))]
        previous = None
        for r in table:
            if previous is not None and r[:2] != previous:
                lines.append("")
            lines.append(fmt(r))
            previous = r[:2]
    return "\n".join(lines)


def write_csv(rows: list[dict[str, Any]], path: str) -> None:
    import csv

    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    def csv_list(text: str) -> list[str]:
        return [t.strip() for t in text.split(",") if t.strip()]

    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--benchmark",
        default="nb201",
        choices=list(BENCHMARKS),
        help="the table: nb201 ($PARETUNE_NB201) or nasbench_macro ($PARETUNE_NASBENCH_MACRO)",
    )
    p.add_argument(
        "--objectives",
        type=csv_list,
        default=None,
        help="objective sets, comma-separated (default: all of the benchmark's: "
        + "; ".join(f"{b}: {','.join(n)}" for b, n in SET_NAMES.items())
        + ")",
    )
    p.add_argument(
        "--engines",
        type=csv_list,
        default=list(DEFAULT_ENGINES),
        help="engine names, comma-separated",
    )
    p.add_argument("--seeds", type=int, default=10, help="number of seeds (0..N-1)")
    p.add_argument(
        "--first-seed", type=int, default=0, help="seeds FIRST..FIRST+N-1 (to split a long run)"
    )
    p.add_argument(
        "--budgets", type=lambda t: sorted({int(x) for x in csv_list(t)}), default=[100, 300, 1000]
    )
    p.add_argument(
        "--in-flight",
        type=lambda t: sorted({int(x) for x in csv_list(t)}),
        default=[1],
        metavar="K[,K...]",
        help="proposals outstanding, results told back in a seeded random order (default 1)",
    )
    p.add_argument("--engine-param", action="append", default=[], metavar="ENGINE.KEY=VALUE")
    p.add_argument("--dataset", default="cifar10", choices=["cifar10", "cifar100", "imagenet16"])
    p.add_argument(
        "--table", default=None, help="NB201 table file or folder (default: $PARETUNE_NB201)"
    )
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    p.add_argument("--out", default=None, help="write one row per run and budget to this CSV")
    args = p.parse_args(argv)
    sets = SET_NAMES[args.benchmark]
    if args.objectives is None:
        args.objectives = list(sets)
    unknown = [o for o in args.objectives if o not in sets]
    if unknown:
        p.error(f"--objectives: unknown {unknown} for {args.benchmark} (available: {list(sets)})")
    available = engine_names() + list(OPTUNA_ENGINES)
    unknown = [e for e in args.engines if e not in available]
    if unknown:
        p.error(f"--engines: unknown {unknown} (available: {available})")
    if args.seeds < 1 or not args.budgets or min(args.budgets) < 1:
        p.error("--seeds and every budget must be positive")
    if not args.in_flight or min(args.in_flight) < 1:
        p.error(f"--in-flight: {args.in_flight} (each K must be a positive integer)")
    try:
        if args.benchmark == "nasbench_macro":
            args.table = str(resolve_macro_table(args.table))
            args.dataset = "nasbench_macro"  # the benchmark key (CIFAR-10 only)
        else:
            args.table = str(resolve_table_path(args.table))
    except FileNotFoundError as e:
        p.error(str(e))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    params = parse_engine_params(args.engine_param, args.engines)
    start = time.perf_counter()
    for objective_set in args.objectives:  # build before forking: the workers inherit them
        _bench(args.table, objective_set, args.dataset)
    jobs = build_jobs(args, args.engines, params)
    if args.jobs > 1:
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
            results = list(pool.map(run_job, jobs))
    else:
        results = [run_job(job) for job in jobs]
    rows = [r for result in results for r in result]
    cpu = sum(max(r["seconds"] for r in result) for result in results if result)
    rows.sort(key=lambda r: (r["objectives"], r["engine"], r["budget"], r["seed"]))
    print(format_table(summarise(rows), args, args.engines))
    print(
        f"\n{len(jobs)} runs in {time.perf_counter() - start:.1f} s wall with {args.jobs} processes "
        f"({cpu:.1f} CPU s in the runs)"
    )
    if args.out:
        write_csv(rows, args.out)
        print(f"wrote {len(rows)} rows to {args.out}")


if __name__ == "__main__":
    main()
