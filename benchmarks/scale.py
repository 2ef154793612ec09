"""Load test: thousands of tabular trials through the whole platform, tracked on a real MLflow server.

Runs ``--trials`` (default 2,000) NB201 table trials with ``--in-flight`` (default 8) at once
through ``paretune.platform.launcher.run`` (Ray Tune, the paretune searcher, the journal and
MLflow tracking to a real ``mlflow server`` process on loopback), samples the driver's resident
memory while it runs and prints: trials per second, driver memory at the start, its peak while
trials run and at the end, its growth per 1,000 trials, and how many MLflow runs exist (every
trial must have one, none may be missing).

A long search runs as ``Tuner.fit`` segments (``search.segment_size``): within a segment Ray
keeps every trial (about 20 KB of resident memory each), and the segment frees them when it
ends, so memory is a saw whose teeth are as long as a segment. Growth is therefore given two
ways: the least-squares slope over every sample after the first 20% of trials, and the slope
of the memory at the start of each segment after the first (the low point of each tooth:
what the driver keeps from one segment to the next), with those values listed, and each step
from one segment start to the next.

    PARETUNE_NB201=../shared/benchmarks/nb201 python benchmarks/scale.py --trials 2000
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(workdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    proc = subprocess.Popen(
        [
            str(mlflow),
            "server",
            "--workers",
            "1",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{workdir / 'server.db'}",
            "--artifacts-destination",
            str(workdir / "artifacts"),
        ],
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=open(workdir / "server.log", "w"),  # noqa: SIM115 - the server owns it
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.5)
    raise SystemExit("the MLflow server did not start")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=2000)
    p.add_argument("--in-flight", type=int, default=8)
    p.add_argument(
        "--segment-size", type=int, default=None, help="search.segment_size (default: the config's)"
    )
    p.add_argument("--table", default=os.environ.get("PARETUNE_NB201"))
    args = p.parse_args()
    if not args.table:
        raise SystemExit("set PARETUNE_NB201 or --table to the NB201 table folder")

    import ray
    from mlflow.tracking import MlflowClient

    from paretune.platform.config import config_from_dict
    from paretune.platform.launcher import run
    from paretune.platform.tracking import existing_trial_runs

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        server, url = start_server(workdir)
        try:
            ray.init(
                address="local",  # a fresh local instance, never a cluster left running
                num_cpus=args.in_flight,
                include_dashboard=False,
                logging_level="ERROR",
                log_to_driver=False,
            )
            cfg = config_from_dict(
                {
                    "name": "scale",
                    "evaluator": {"kind": "table", "path": str(Path(args.table).resolve())},
                    "objectives": [
                        {"name": "accuracy", "direction": "max"},
                        {"name": "latency", "direction": "min"},
                        {"name": "energy", "direction": "min"},
                    ],
                    "search": {
                        "algorithm": "random",
                        "num_samples": args.trials,
                        "max_concurrent": args.in_flight,
                        **({"segment_size": args.segment_size} if args.segment_size else {}),
                    },
                    "resources": {"cpu": 1},
                    "storage": {"path": str(workdir / "runs")},
                    "mlflow": {"tracking_uri": url},
                }
            )
            samples: list[tuple[int, float]] = []
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(0.5):
                    dirs = list((workdir / "runs").glob("scale-*/paretune-trials.jsonl"))
                    done = sum(1 for _ in open(dirs[0])) if dirs else 0
                    samples.append((done, rss_mb()))

            start_rss = rss_mb()
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            t0 = time.perf_counter()
            result = run(cfg, verbose=0)
            elapsed = time.perf_counter() - t0
            stop.set()
            sampler.join()
            end_rss = rss_mb()
            runs = existing_trial_runs(
                MlflowClient(url), result.mlflow_experiment_id, result.parent_run_id
            )
            ray.shutdown()
        finally:
            server_exit = server.poll()  # None: still up, as it should be
            server_log = (workdir / "server.log").read_text()[-2000:]
            if server_exit is None:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=30)

    import numpy as np

    if server_exit is not None:
        print(f"the MLflow server exited during the run (code {server_exit}):\n{server_log}")
    # Growth per trial while trials run, after a warm-up (the first 20% of trials load code and
    # fill caches). Samples after the last trial are left out: the end (Ray loading every
    # trial's results, the report) is a one-off, not growth per trial.
    pts = np.array([s for s in samples if 0.2 * args.trials < s[0] < args.trials], dtype=float)
    peak_rss = max((s[1] for s in samples if s[0] < args.trials), default=float("nan"))
    slope = float(np.polyfit(pts[:, 0], pts[:, 1], 1)[0] * 1000) if len(pts) > 3 else float("nan")
    # Memory at the start of each later segment: the lowest sample of its first fifth.
    size = cfg.search.segment_size
    starts = []
    for k in range(1, (args.trials - 1) // size + 1):
        low = [r for d, r in samples if k * size <= d < k * size + size / 5]
        if low:
            starts.append((k * size, min(low)))
    start_slope = float("nan")
    if len(starts) > 1:
        xs, ys = zip(*starts, strict=True)
        start_slope = float(np.polyfit(xs, ys, 1)[0] * 1000)
    rows = result.report.rows
    finished = sum(1 for r in runs.values() if r[1] == "FINISHED")
    print(
        f"\n{args.trials} tabular trials, {args.in_flight} in flight, MLflow on a real server ({url})\n"
    )
    print(f"{'trials run':<40}{len(rows):>12}")
    print(f"{'failed trials':<40}{result.report.num_failed:>12}")
    print(f"{'wall time (s)':<40}{elapsed:>12.1f}")
    print(f"{'trials per second':<40}{len(rows) / elapsed:>12.2f}")
    print(f"{'driver RSS at start (MB)':<40}{start_rss:>12.1f}")
    print(f"{'driver RSS, peak while trials ran (MB)':<40}{peak_rss:>12.1f}")
    print(f"{'driver RSS at the end of run() (MB)':<40}{end_rss:>12.1f}")
    print(
        f"{'driver RSS growth per 1,000 trials (MB)':<40}{slope:>12.2f}"
        f"   (least squares over {len(pts)} samples after the first 20% of trials)"
    )
    print(
        f"{'  ... at the start of each segment':<40}{start_slope:>12.2f}"
        f"   (segments of {size}; MB at trial "
        + ", ".join(f"{d}: {r:.1f}" for d, r in starts)
        + ")"
    )
    # Each tooth's step on its own: a one-off step (a table of the interpreter doubling, say)
    # and steady growth look alike in a slope over three points.
    steps = [b[1] - a[1] for a, b in itertools.pairwise(starts)]
    print(
        f"{'  ... step from segment to segment (MB)':<40}"
        + " ".join(f"{x:+.1f}" for x in steps)
        + f"   (per {size} trials)"
    )
    print(f"{'MLflow trial runs / FINISHED':<40}{len(runs):>6} / {finished:<5}")
    missing = len(rows) - len(runs)
    print(f"{'MLflow runs missing':<40}{missing:>12}")
    if missing or finished != len(rows):
        raise SystemExit("MLflow is missing trial runs")


if __name__ == "__main__":
    main()
