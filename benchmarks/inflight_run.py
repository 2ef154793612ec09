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
    p.add_argument("--out", default=None, help="CSV, one row per run")
    args = p.parse_args(argv)
    if 3 * args.cpus_per_node < max(args.in_flight):
        p.error(f"--cpus-per-node {args.cpus_per_node}: 3 nodes hold fewer than K trials")
    table = str(resolve_table_path(None))
    bench_args = {"table": table, "dataset": "cifar10", "objectives": args.objectives}
    bench = sq._bench(table, args.objectives, "cifar10")

    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": args.cpus_per_node, "include_dashboard": False},
    )
    for _ in range(2):
        cluster.add_node(num_cpus=args.cpus_per_node)
    cluster.wait_for_nodes()
    work = Path(tempfile.mkdtemp(prefix="paretune-inflight-"))
    records = []
    t_all = time.perf_counter()
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
                        }
                        if k == 1 and sc["archs"]:  # same seeded proposals as the simulation?
                            rec["same_as_sim"] = sc["gap"] == sim["gap"]
                        records.append(rec)
                        print(json.dumps(rec), flush=True)
    finally:
        cluster.shutdown()

    lines = [
        f"paretune run on a 3-node ray.cluster_utils cluster ({args.cpus_per_node} CPUs per node, "
        f"{os.cpu_count()} cores), NB201 table cifar10, objective set {args.objectives} "
        f"(search_quality's objectives, reference point and gap); in flight = "
        "search.max_concurrent; sim = search_quality --in-flight K for the same seeds; "
        "gap in points (%), mean +- standard error over seeds",
        f"{'engine':<9}{'K':>3}{'budget':>7}{'seeds':>6}{'gap run':>16}{'gap sim':>16}"
        f"{'run-sim':>16}{'wall s/run':>11}{'ok runs':>8}",
    ]
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["engine"], r["in_flight"], r["budget"]), []).append(r)
    for (engine, k, budget), rs in groups.items():
        good = [r for r in rs if r["ok"]]
        if not good:
            lines.append(f"{engine:<9}{k:>3}{budget:>7}  no run finished cleanly")
            continue
        run_m, run_s = mean_se([100 * r["gap_run"] for r in good])
        sim_m, sim_s = mean_se([100 * r["gap_sim"] for r in good])
        d_m, d_s = mean_se([100 * (r["gap_run"] - r["gap_sim"]) for r in good])
        wall = np.mean([r["wall_run"] for r in good])
        lines.append(
            f"{engine:<9}{k:>3}{budget:>7}{len(good):>6}{run_m:>9.2f} +-{run_s:>4.2f}"
            f"{sim_m:>9.2f} +-{sim_s:>4.2f}{d_m:>+9.2f} +-{d_s:>4.2f}{wall:>11.1f}"
            f"{len(good):>5}/{len(rs)}"
        )
    lines.append("")
    lines.append("Loss from 1 to 8 in flight (K=max minus K=1, paired by seed), run vs sim:")
    ks = sorted(args.in_flight)
    for budget in args.budgets:
        for engine in args.engines:
            by = {
                (r["in_flight"], r["seed"]): r
                for r in records
                if r["engine"] == engine and r["budget"] == budget and r["ok"]
            }
            seeds = [s for (k, s) in by if k == ks[-1] and (ks[0], s) in by]
            if len(ks) < 2 or not seeds:
                continue
            for key in ("gap_run", "gap_sim"):
                m, s = mean_se([100 * (by[ks[-1], x][key] - by[ks[0], x][key]) for x in seeds])
                lines.append(
                    f"  {engine:<8} b={budget:<4} {key[4:]}: {m:+.2f} +- {s:.2f} (n={len(seeds)})"
                )
    same = [r["same_as_sim"] for r in records if "same_as_sim" in r]
    bad = [r for r in records if not r["ok"]]
    lines.append(
        f"K=1 runs identical to the simulation (same gap): {sum(same)}/{len(same)}; runs with a "
        f"wrong trial count, an errored trial or values not the table's: {len(bad)}/{len(records)}"
    )
    lines.append(f"{len(records)} runs in {time.perf_counter() - t_all:.0f} s wall; work: {work}")
    print("\n".join(lines))
    if args.out:
        import csv

        with open(args.out, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=sorted({k for r in records for k in r}))
            writer.writeheader()
            writer.writerows(records)
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
