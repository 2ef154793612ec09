"""Search quality through ``paretune run`` with K trials at once, beside the simulated figure.

Starts a 3-node ``ray.cluster_utils`` cluster and runs the real entry point (``python -m
paretune run``, a subprocess joined to the cluster by its address) on the NB201 table for each
engine, number of trials in flight (``search.max_concurrent``), budget and seed. The objectives
are those of an objective set of :mod:`benchmarks.search_quality` (built from
:func:`benchmarks.nb201_bench.bench_objectives`, checked against the recorded trials), and the
finished trials (the experiment's journal, :func:`paretune.platform.launcher.report`) are scored
exactly as search_quality scores an engine's evaluated set (gap to the true front,
``NB201Benchmark.gap``). Beside it: search_quality's simulated ``--in-flight K`` run (K
outstanding, told back in a seeded random order) for the same seeds, and the wall time per run::

    PARETUNE_NB201=/work/shared/benchmarks/nb201 python benchmarks/inflight_run.py \\
        --engines pertnas,tnd --in-flight 1,8 --budgets 100 --seeds 3

With one trial at once and a seeded engine, ``paretune run`` and the simulation propose the
same architectures (a check of the harness); with 8 the order results come back is the
cluster's. MLflow is off unless ``--mlflow`` (it records, it does not steer the search).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import search_quality as sq  # noqa: E402
from benchmarks.nb201_bench import OBJECTIVE_SET_NAMES  # noqa: E402
from paretune.objectives.nb201_table import resolve_table_path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BASE_CONFIG = ROOT / "conf" / "nb201_tabular.yaml"
# Table columns of the benchmark's objectives -> (evaluator field, value) of the table evaluator.
_DEVICE_PREFIXES = {"latency": "latency_ms_", "energy": "energy_mj_"}


def run_config(
    bench: Any, engine: str, seed: int, budget: int, in_flight: int, work: Path, mlflow: bool
) -> dict[str, Any]:
    """The experiment config of one run: the base tabular config with the benchmark's
    objectives (names, directions, devices) and the engine, seed, budget and concurrency."""
    cfg = yaml.safe_load(BASE_CONFIG.read_text())
    cfg["name"] = f"inflight-{engine}-k{in_flight}-b{budget}-s{seed}"
    cfg["seed"] = seed
    cfg["evaluator"]["dataset"] = bench.dataset
    cfg["evaluator"]["fidelity"] = 200
    for o in bench.bench_objectives:
        prefix = _DEVICE_PREFIXES.get(o.name)
        if prefix is not None:
            if not o.search_column.startswith(prefix):
                raise SystemExit(f"objective {o.name}: column {o.search_column} is not {prefix}*")
            cfg["evaluator"][f"{o.name}_device"] = o.search_column[len(prefix) :]
    cfg["objectives"] = [{"name": o.name, "direction": o.direction} for o in bench.bench_objectives]
    cfg["search"] = {"algorithm": engine, "num_samples": budget, "max_concurrent": in_flight}
    cfg["storage"] = {"path": str(work / "runs" / cfg["name"])}
    cfg["mlflow"] = {"enabled": mlflow, "tracking_uri": f"sqlite:///{work}/mlflow.db"}
    return cfg


def paretune_run(cfg: dict[str, Any], address: str, work: Path) -> dict[str, Any]:
    """``python -m paretune run`` on ``cfg`` against the cluster; its trials and wall time."""
    path = work / f"{cfg['name']}.yaml"
    path.write_text(json.dumps(cfg))
    env = {**os.environ, "RAY_ADDRESS": address}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "paretune", "run", str(path), "-q"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=work,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stdout[-3000:], file=sys.stderr)
        return {"rc": proc.returncode, "wall": wall, "rows": []}
    from paretune.platform import launcher

    (experiment,) = [p for p in Path(cfg["storage"]["path"]).iterdir() if p.is_dir()]
    rows = launcher.report(experiment).rows
    return {"rc": 0, "wall": wall, "rows": sorted(rows, key=lambda r: r.number)}


def score_run(bench: Any, result: dict[str, Any], budget: int) -> dict[str, Any]:
    """Gap of the run's trials, as search_quality scores an engine's evaluated set; checks the
    trial count, errors and that each trial's values are the benchmark's for its arch."""
    rows = result["rows"]
    archs = [bench.space.decode(r.arch) for r in rows]
    errors = sum(not r.ok for r in rows)
    mismatched = 0
    for r, a in zip(rows, archs, strict=True):
        want = bench.values(a)
        if r.ok and any(not np.isclose(r.values[k], v) for k, v in want.items()):
            mismatched += 1
    ok = result["rc"] == 0 and len(rows) == budget and errors == 0 and mismatched == 0
    return {
        "trials": len(rows),
        "errors": errors,
        "mismatched": mismatched,
        "ok": ok,
        "gap": bench.gap(archs) if archs else float("nan"),
        "archs": archs,
    }


def simulated(bench_args: dict[str, str], engine: str, seed: int, budget: int, k: int) -> dict:
    """search_quality's own run of the engine (``--in-flight k``), one seed and budget."""
    (row,) = sq.run_job(
        {
            **bench_args,
            "engine": engine,
            "seed": seed,
            "budgets": [budget],
            "in_flight": k,
            "budget_param": sq._takes_budget(engine),
            "params": {},
        }
    )
    return row


def mean_se(xs: list[float]) -> tuple[float, float]:
    a = np.asarray(xs, dtype=float)
    return float(a.mean()), float(a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else 0.0


def run_all(args: argparse.Namespace, bench: Any, bench_args: dict[str, str]) -> list[dict]:
    """Every (budget, engine, K, seed) run on one 3-node cluster; one record per run."""
    from benchmarks.cluster import start_cluster

    cluster = start_cluster(args.cpus_per_node)
    work = Path(tempfile.mkdtemp(prefix="paretune-inflight-"))
    records = []
    try:
        for budget in args.budgets:
            for engine in args.engines:
                for k in args.in_flight:
                    for seed in range(args.first_seed, args.first_seed + args.seeds):
                        cfg = run_config(bench, engine, seed, budget, k, work, args.mlflow)
                        res = paretune_run(cfg, cluster.address, work)
                        sc = score_run(bench, res, budget)
                        sim = simulated(bench_args, engine, seed, budget, k)
                        rec = {
                            "objectives": args.objectives,
                            "engine": engine,
                            "in_flight": k,
                            "budget": budget,
                            "seed": seed,
                            "rc": res["rc"],
                            "trials": sc["trials"],
                            "errors": sc["errors"],
                            "mismatched": sc["mismatched"],
                            "ok": sc["ok"],
                            "gap_run": sc["gap"],
                            "gap_sim": sim["gap"],
                            "wall_run": res["wall"],
                            "wall_sim": sim["wall_seconds"],
                            "same_as_sim": sc["gap"] == sim["gap"],
                        }
                        records.append(rec)
                        print(json.dumps(rec), flush=True)
    finally:
        cluster.shutdown()
    print(f"work: {work}")
    return records


def read_records(paths: list[str]) -> list[dict]:
    """Records of earlier runs (``--out`` CSVs), to print one table over several invocations."""
    import csv

    out = []
    for path in paths:
        with open(path, newline="") as fh:
            for r in csv.DictReader(fh):
                for key in ("in_flight", "budget", "seed", "rc", "trials", "errors", "mismatched"):
                    r[key] = int(r[key])
                for key in ("gap_run", "gap_sim", "wall_run", "wall_sim"):
                    r[key] = float(r[key])
                for key in ("ok", "same_as_sim"):
                    r[key] = r[key] == "True"
                out.append(r)
    return out


def format_table(records: list[dict], bench_args: dict[str, str], sim_seeds: int) -> str:
    """The table: run beside simulation per (engine, K, budget), the K=8-K=1 losses, checks."""
    objectives = bench_args["objectives"]
    lines = [
        f"paretune run (python -m paretune run, search.max_concurrent = K) on a 3-node "
        f"ray.cluster_utils cluster, NB201 table cifar10, objective set {objectives} "
        "(search_quality's objectives, reference point and gap); sim = search_quality "
        f"--in-flight K for the same seeds; sim{sim_seeds} = search_quality over seeds "
        f"0..{sim_seeds - 1}; gap in points (%), mean +- standard error; wall = seconds per run",
        f"{'engine':<9}{'K':>3}{'budget':>7}{'seeds':>6}{'gap run':>15}{'gap sim':>15}"
        f"{'run-sim':>15}{f'sim{sim_seeds}':>15}{'run-sim' + str(sim_seeds):>16}"
        f"{'wall run':>10}{'wall sim':>10}",
    ]
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["engine"], r["in_flight"], r["budget"]), []).append(r)
    many: dict[tuple, list[float]] = {}
    for (engine, k, budget), rs in sorted(
        groups.items(), key=lambda kv: (kv[0][2], kv[0][0], kv[0][1])
    ):
        good = [r for r in rs if r["ok"]]
        if not good:
            lines.append(f"{engine:<9}{k:>3}{budget:>7}  no run finished cleanly")
            continue
        sims = [100 * simulated(bench_args, engine, s, budget, k)["gap"] for s in range(sim_seeds)]
        many[engine, k, budget] = sims
        run_m, run_s = mean_se([100 * r["gap_run"] for r in good])
        sim_m, sim_s = mean_se([100 * r["gap_sim"] for r in good])
        d_m, d_s = mean_se([100 * (r["gap_run"] - r["gap_sim"]) for r in good])
        big_m, big_s = mean_se(sims)
        # run (n seeds) against the sim over many seeds: difference of means, combined s.e.
        db_m, db_s = run_m - big_m, float(np.hypot(run_s, big_s))
        lines.append(
            f"{engine:<9}{k:>3}{budget:>7}{len(good):>6}{run_m:>9.2f} +-{run_s:>4.2f}"
            f"{sim_m:>9.2f} +-{sim_s:>4.2f}{d_m:>+9.2f} +-{d_s:>4.2f}"
            f"{big_m:>9.2f} +-{big_s:>4.2f}{db_m:>+10.2f} +-{db_s:>4.2f}"
            f"{np.mean([r['wall_run'] for r in good]):>10.1f}"
            f"{np.mean([r['wall_sim'] for r in good]):>10.2f}"
        )
    lines += ["", "Loss from K=1 to K=8 (paired by seed where both ran), run | sim:"]
    for (engine, k, budget), rs in sorted(groups.items()):
        if k == 1:
            continue
        by1 = {r["seed"]: r for r in groups.get((engine, 1, budget), []) if r["ok"]}
        pairs = [(by1[r["seed"]], r) for r in rs if r["ok"] and r["seed"] in by1]
        if not pairs:
            continue
        run = mean_se([100 * (b["gap_run"] - a["gap_run"]) for a, b in pairs])
        sim = mean_se([100 * (b["gap_sim"] - a["gap_sim"]) for a, b in pairs])
        lines.append(
            f"  {engine:<8} b={budget:<4} K={k}: run {run[0]:+.2f} +- {run[1]:.2f} | sim "
            f"{sim[0]:+.2f} +- {sim[1]:.2f} (n={len(pairs)})"
        )
    k1 = [r for r in records if r["in_flight"] == 1]
    bad = [r for r in records if not r["ok"]]
    lines.append(
        f"K=1 runs identical to the simulation (same gap): {sum(r['same_as_sim'] for r in k1)}/"
        f"{len(k1)}; runs with a wrong trial count, an errored trial or values not the "
        f"table's: {len(bad)}/{len(records)}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    def csv_list(text: str) -> list[str]:
        return [t.strip() for t in text.split(",") if t.strip()]

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engines", type=csv_list, default=["pertnas", "tnd"])
    p.add_argument("--in-flight", type=lambda t: [int(x) for x in csv_list(t)], default=[1, 8])
    p.add_argument("--budgets", type=lambda t: [int(x) for x in csv_list(t)], default=[100])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--objectives", default="acc-lat-energy", choices=list(OBJECTIVE_SET_NAMES))
    p.add_argument("--cpus-per-node", type=int, default=3, help="declared CPUs per node (3 nodes)")
    p.add_argument("--mlflow", action="store_true", help="record the runs in MLflow (SQLite)")
    p.add_argument("--sim-seeds", type=int, default=40, help="seeds of the sim reference column")
    p.add_argument("--out", default=None, help="CSV, one row per run")
    p.add_argument(
        "--table-from",
        type=csv_list,
        default=None,
        metavar="CSV[,CSV]",
        help="no runs: print the table of earlier --out CSVs",
    )
    args = p.parse_args(argv)
    if 3 * args.cpus_per_node < max(args.in_flight):
        p.error(f"--cpus-per-node {args.cpus_per_node}: 3 nodes hold fewer than K trials")
    table = str(resolve_table_path(None))
    bench_args = {"table": table, "dataset": "cifar10", "objectives": args.objectives}
    bench = sq._bench(table, args.objectives, "cifar10")
    t0 = time.perf_counter()
    if args.table_from:
        records = read_records(args.table_from)
    else:
        records = run_all(args, bench, bench_args)
        if args.out:
            import csv

            with open(args.out, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(records[0]))
                writer.writeheader()
                writer.writerows(records)
    print(format_table(records, bench_args, args.sim_seeds))
    print(f"{len(records)} runs; {time.perf_counter() - t0:.0f} s wall on {os.cpu_count()} cores")
    return 0 if all(r["ok"] for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
