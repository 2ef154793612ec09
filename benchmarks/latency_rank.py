"""Does the CPU latency paretune measures rank NB201 networks like the table's CPU columns?

Builds the NB201 network of ``--sample`` random architectures as paretune does (C=16, N=5,
32x32 RGB input, 10 classes), and measures each one's median latency at batch 1 on one CPU
thread, in eval mode under ``torch.no_grad``. The machine may be shared, so by default the
measurements are *interleaved*: after ``--warmup`` untimed calls per network, each of
``--repeats`` rounds times one call of every network in a fresh random order, and a network's
latency is the median of its rounds; a burst of load then hits all networks alike instead of a
few unlucky ones. Each call's CPU time on the calling thread is recorded too (one torch
thread computes on it), which leaves out the waits for a core on a loaded machine; both are
printed. ``--mode timer`` measures the networks one after another with paretune's own
:func:`~paretune.objectives.measure.measure_latency` (``torch.utils.benchmark``) instead.

Printed: Spearman rank correlation of the measured latencies with the table's Xeon CPU
columns (HELP: gold_6226, gold_6240, silver_4114, silver_4210r), with FLOPs and parameters
for comparison, and the correlation of the table's CPU columns with each other over the same
sample (how well two CPUs agree at all).

Usage::

    python benchmarks/latency_rank.py                   # 200 architectures
    python benchmarks/latency_rank.py --sample 50 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paretune.objectives.nb201_table import resolve_table_path  # noqa: E402
from paretune.objectives.table import TableEvaluator  # noqa: E402
from paretune.spaces.nb201 import NB201Space  # noqa: E402

CPU_COLUMNS = ("gold_6226", "gold_6240", "silver_4114", "silver_4210r")


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def build_models(archs: list, seed: int) -> list:
    import torch

    space = NB201Space()
    models = []
    for arch in archs:
        torch.manual_seed(seed)
        models.append(space.build(arch, channels=16, cells_per_stage=5, input_size=32).eval())
    return models


def measure_interleaved(
    models: list, warmup: int, repeats: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, float]]:
    """Per model over interleaved rounds: median wall time (ms), median CPU time of the
    calling thread (ms), the wall-time spread (IQR/median), and the split-half reliability of
    each clock (Spearman between the medians of the odd and of the even rounds: how well the
    measurement agrees with itself, a ceiling for its agreement with anything else).

    With one torch thread the forward pass runs on the calling thread, so its thread CPU time
    is what the call cost when it ran; on a loaded machine it leaves out the time the thread
    waited for a core, which wall time does not.
    """
    import torch

    x = torch.zeros(1, 3, 32, 32)
    rng = np.random.default_rng(seed)
    wall = [[] for _ in models]
    cpu = [[] for _ in models]
    with torch.no_grad():
        for model in models:
            for _ in range(warmup):
                model(x)
        for _ in range(repeats):
            for i in rng.permutation(len(models)):
                start, start_cpu = time.perf_counter(), time.thread_time()
                models[i](x)
                cpu[i].append(time.thread_time() - start_cpu)
                wall[i].append(time.perf_counter() - start)
    med = np.array([statistics.median(t) * 1e3 for t in wall])
    med_cpu = np.array([statistics.median(t) * 1e3 for t in cpu])
    q = np.array([np.subtract(*np.percentile(t, [75, 25])) * 1e3 for t in wall])
    reliability = {
        name: spearman(
            [statistics.median(t[0::2]) for t in times],
            [statistics.median(t[1::2]) for t in times],
        )
        for name, times in (("wall", wall), ("cpu", cpu))
        if repeats >= 2
    }
    return med, med_cpu, q / med, reliability


def measure_sequential(models: list, warmup: int, repeats: int) -> np.ndarray:
    import torch

    from paretune.objectives.measure import measure_latency

    x = torch.zeros(1, 3, 32, 32)
    return np.array(
        [measure_latency(m, x, warmup=warmup, repeats=repeats, threads=1) for m in models]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", default=None, help="NB201 table or folder ($PARETUNE_NB201)")
    parser.add_argument("--sample", type=int, default=200, help="architectures to measure")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--mode", choices=("interleaved", "timer"), default="interleaved")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write arch, measured and table columns (CSV)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    table = TableEvaluator(resolve_table_path(args.table))
    columns = [f"latency_ms_{c}" for c in CPU_COLUMNS]
    values, archs = table.matrix([*columns, "flops", "params"])
    rng = np.random.default_rng(args.seed)
    rows = rng.choice(len(archs), size=args.sample, replace=False)
    sample = [archs[i] for i in rows]

    started = time.perf_counter()
    models = build_models(sample, args.seed)
    built = time.perf_counter() - started
    started = time.perf_counter()
    spread = cpu = None
    reliability: dict[str, float] = {}
    if args.mode == "interleaved":
        measured, cpu, spread, reliability = measure_interleaved(
            models, args.warmup, args.repeats, args.seed
        )
    else:
        measured = measure_sequential(models, args.warmup, args.repeats)
    took = time.perf_counter() - started

    print(
        f"{args.sample} NB201 networks (C=16, N=5, 32x32, batch 1, 1 thread), {args.mode} "
        f"measurement: warm-up {args.warmup}, {args.repeats} timed calls each; "
        f"built in {built:.0f} s, measured in {took:.0f} s"
    )
    print(
        f"measured latency: median {np.median(measured):.2f} ms, range "
        f"{measured.min():.2f} to {measured.max():.2f} ms"
        + (f"; median spread (IQR/median) {np.median(spread):.1%}" if spread is not None else "")
    )
    if cpu is not None:
        print(
            f"thread CPU time: median {np.median(cpu):.2f} ms (wall/CPU "
            f"{np.median(measured / cpu):.2f}: the share of time waiting for a core)"
        )
    if reliability:
        print(
            "split-half reliability (Spearman, odd vs even rounds): "
            + ", ".join(f"{k} {v:.3f}" for k, v in reliability.items())
        )
    # Thread CPU time is shown beside wall time: on a loaded machine it leaves out the waits
    # for a core (see measure_interleaved).
    other = cpu if cpu is not None else measured
    print(f"\n{'Spearman with':<26} {'measured (wall)':>18} {'measured (CPU)':>15} {'FLOPs':>7}")
    print("-" * 69)
    sub = values[rows]
    for k, c in enumerate(columns):
        print(
            f"{c:<26} {spearman(measured, sub[:, k]):>18.3f} {spearman(other, sub[:, k]):>15.3f} "
            f"{spearman(sub[:, -2], sub[:, k]):>7.3f}"
        )
    for label, k in (("cifar10 FLOPs", -2), ("cifar10 params", -1)):
        print(
            f"{label:<26} {spearman(measured, sub[:, k]):>18.3f} "
            f"{spearman(other, sub[:, k]):>15.3f}"
        )
    if args.out:
        import csv

        space = NB201Space()
        with open(args.out, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["arch", "wall_ms", "cpu_ms", *columns, "flops", "params"])
            for k, arch in enumerate(sample):
                cpu_ms = "" if cpu is None else f"{cpu[k]:.4f}"
                w.writerow([space.encode(arch), f"{measured[k]:.4f}", cpu_ms, *sub[k].tolist()])
    print("\ntable CPU columns against each other (same sample):")
    for i in range(len(columns)):
        for j in range(i + 1, len(columns)):
            print(
                f"  {CPU_COLUMNS[i]:<13} vs {CPU_COLUMNS[j]:<13} "
                f"{spearman(sub[:, i], sub[:, j]):.3f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
