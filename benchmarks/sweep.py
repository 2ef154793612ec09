"""A sweep against the same members one after another, on one 3-node ``ray.cluster_utils`` cluster.

Both modes run ``paretune sweep`` in a subprocess joined to the cluster by its address (so each
member is the same ``paretune run`` child process): the sweep with ``max_concurrent_searches =
members``, the sequential run with 1. Printed, side by side: wall clock and its ratio, trials
recorded in the members' journals, MLflow trial runs missing under the members' parent runs,
and the peak memory of the drivers (the sweep driver's own, and the sum over it and its member
drivers, sampled from /proc every 0.5 s)::

    PARETUNE_NB201=/work/shared/benchmarks/nb201 python benchmarks/sweep.py
    python benchmarks/sweep.py --members 4 --trials 50      # smaller
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]


def _rss_kb(pid: int, field: str = "VmRSS") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def run_mode(label: str, args: argparse.Namespace, address: str, work: Path) -> dict:
    """One ``paretune sweep``; returns wall, trials, missing MLflow runs and memory peaks."""
    out = work / label
    spec = work / f"{label}.yaml"
    spec.write_text(
        json.dumps(
            {
                "name": f"bench-{label}",
                "base": str(ROOT / "conf" / "nb201_tabular.yaml"),
                "overrides": {
                    "search.num_samples": args.trials,
                    "search.algorithm": "regularized_evolution",
                    "search.max_concurrent": args.per_member,
                    "mlflow.tracking_uri": f"sqlite:///{work}/{label}-mlflow.db",
                },
                "grid": {"seed": list(range(args.members))},
                "max_concurrent_searches": args.members if label == "sweep" else 1,
                "ray": {"address": address},
            }
        )
    )
    env = {**os.environ, "RAY_ADDRESS": address}
    cmd = [sys.executable, "-m", "paretune", "sweep", str(spec), "--out", str(out), "-q"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True
    )
    peaks = {"driver_kb": 0, "all_drivers_kb": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            own = _rss_kb(proc.pid, "VmHWM")
            total = _rss_kb(proc.pid) + sum(_rss_kb(c) for c in _children(proc.pid))
            peaks["driver_kb"] = max(peaks["driver_kb"], own)
            peaks["all_drivers_kb"] = max(peaks["all_drivers_kb"], total)
            time.sleep(0.5)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    text, _ = proc.communicate()
    wall = time.perf_counter() - t0
    done.set()
    thread.join()
    if proc.returncode != 0:
        print(text[-3000:], file=sys.stderr)
    return {"label": label, "rc": proc.returncode, "wall_s": wall, **peaks, **count(out)}


def count(sweep_dir: Path) -> dict:
    """Trials in the members' journals and their trial runs in MLflow (by parent run)."""
    from mlflow.tracking import MlflowClient

    from paretune.platform import launcher
    from paretune.platform.experiment import read_state
    from paretune.platform.sweep import read_state as read_sweep

    state = read_sweep(sweep_dir)
    client = MlflowClient(tracking_uri=state["mlflow"]["tracking_uri"])
    trials = missing = 0
    for ms in state["members"].values():
        exp = ms.get("experiment_dir")
        if not exp:
            continue
        ids = {r.trial_id for r in launcher.report(exp).rows}
        trials += len(ids)
        parent = read_state(Path(exp))["parent_run_id"]
        runs = client.search_runs(
            [state["mlflow"]["experiment_id"]],
            f"tags.mlflow.parentRunId = '{parent}'",
            max_results=50000,
        )
        missing += max(0, len(ids) - len(runs))
    return {"trials": trials, "missing_mlflow": missing}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--members", type=int, default=8)
    p.add_argument("--trials", type=int, default=200, help="trials per member")
    p.add_argument("--per-member", type=int, default=2, help="search.max_concurrent of a member")
    p.add_argument("--cpus-per-node", type=int, default=2)
    args = p.parse_args(argv)
    from benchmarks.cluster import start_cluster

    cluster = start_cluster(args.cpus_per_node)
    work = Path(tempfile.mkdtemp(prefix="paretune-sweep-bench-"))
    try:
        rows = []
        for mode in ("sequential", "sweep"):
            rows.append(run_mode(mode, args, cluster.address, work))
            print(f"{mode}: {rows[-1]}", flush=True)
    finally:
        cluster.shutdown()
    seq, swp = rows
    print(
        f"{args.members} members x {args.trials} tabular trials (regularized_evolution, "
        f"{args.per_member} trials in flight per member), 3-node ray.cluster_utils cluster "
        f"({args.cpus_per_node} CPUs per node) on {os.cpu_count()} cores; work: {work}"
    )
    print(
        f"{'mode':<12}{'rc':>4}{'wall s':>10}{'trials':>8}{'missing MLflow':>16}"
        f"{'driver MB':>11}{'all drivers MB':>16}"
    )
    for r in rows:
        print(
            f"{r['label']:<12}{r['rc']:>4}{r['wall_s']:>10.1f}{r['trials']:>8}"
            f"{r['missing_mlflow']:>16}{r['driver_kb'] / 1024:>11.0f}"
            f"{r['all_drivers_kb'] / 1024:>16.0f}"
        )
    print(f"wall ratio sweep / sequential: {swp['wall_s'] / seq['wall_s']:.2f} (target <= 0.5)")
    return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
