"""Latency predictor quality on the NB201 table: graph network vs a FLOPs-only baseline.

For each seed, 500 architectures (``--train``) are drawn at random for training and 2,000 others
(``--test``, disjoint) for testing. The graph network (:class:`LatencyPredictor`, one model with
an output per device by default, ``--per-device`` for one model per device) is trained on the
training archs' table latencies of every listed device; the FLOPs-only baseline is the best any
monotone function of FLOPs can do: its Spearman is the rank correlation of FLOPs with latency,
its MAPE that of an isotonic fit of latency on FLOPs over the same 500 training archs. Printed
per device: Spearman rank correlation and mean absolute percentage error (and the median APE,
which the few wild measurements of some devices do not dominate), mean over seeds (± std).

With ``--space darts`` or ``--space mobilenet`` there is no table: ``--n`` architectures are
sampled, each small network is built and its CPU latency measured here with
:func:`paretune.objectives.predictor.measured_pairs` (batch 1, one thread,
``torch.utils.benchmark``; the fastest of ``--rounds`` rounds, each the median of ``--repeats``
calls). By default each call is timed by the thread's CPU time (``--clock cpu``), which other
processes' load does not inflate: on the shared 2-core box, two wall-clock measurements of the
same 20 DARTS networks agreed to Spearman 0.21, two CPU-time ones to 0.91. The predictor trains
on the first ``--train`` networks and is scored on the rest. Side by side on the same
held-out networks: the space's own encoding (DARTS: the cell-graph network; MobileNet: one-hot
and an MLP), the one-hot MLP on DARTS too, isotonic fits on FLOPs and on parameters, and the
held-out networks measured a second time (the ceiling that measurement noise leaves).

Usage::

    python benchmarks/latency_predictor.py                      # 6 devices, seed 0
    python benchmarks/latency_predictor.py --seeds 0,1,2 --devices raspi4,pixel3,fpga
    python benchmarks/latency_predictor.py --space darts --n 300 --train 200
    python benchmarks/latency_predictor.py --space mobilenet --n 300 --train 200
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paretune.objectives.nb201_table import resolve_table_path  # noqa: E402
from paretune.objectives.predictor import LatencyPredictor, PredictorSettings  # noqa: E402
from paretune.objectives.table import TableEvaluator  # noqa: E402

DEFAULT_DEVICES = ("raspi4", "pixel3", "eyeriss", "fpga", "1080ti_1", "titan_rtx_1")
TARGET_SPEARMAN = 0.95


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def kendall(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


# Small networks, measured at batch 1 on one CPU thread (about a second each with the timing).
MEASURED_SPACES = {
    "darts": ({"channels": 16, "layers": 5, "num_classes": 10}, (1, 3, 32, 32)),
    "mobilenet": ({"width_mult": 0.5, "num_classes": 10}, (1, 3, 64, 64)),
}


def measured_benchmark(args: argparse.Namespace) -> int:
    """Sample, build and measure networks of a space; train on some, score on the others."""
    import torch

    from paretune.objectives.measure import count_flops, count_params
    from paretune.objectives.predictor import measured_pairs
    from paretune.spaces import make_space

    space = make_space(args.space)
    build, shape = MEASURED_SPACES[args.space]
    n_train = args.train if args.train is not None else (2 * args.n) // 3
    if not 2 <= n_train < args.n - 2:
        raise SystemExit(f"--train {n_train}: must be in 2..{args.n - 3} (--n {args.n})")
    rng = np.random.default_rng(args.seed)
    archs: list[tuple[int, ...]] = []
    seen = set()
    while len(archs) < args.n:  # distinct networks (MobileNet has twins)
        arch = space.sample(rng)
        key = space.canonical(arch)
        if key not in seen:
            seen.add(key)
            archs.append(arch)
    started = time.perf_counter()

    def progress(i: int, n: int) -> None:
        if i % 50 == 0 or i == n:
            print(f"  measured {i}/{n} ({time.perf_counter() - started:.0f} s)", flush=True)

    print(f"{args.space}: building and measuring {args.n} networks {build} at {shape}", flush=True)
    measure = {
        "build": build,
        "repeats": args.repeats,
        "threads": 1,
        "rounds": args.rounds,
        "clock": args.clock,
    }
    pairs = measured_pairs(space, archs, shape, **measure, seed=args.seed, progress=progress)
    measure_s = time.perf_counter() - started
    lat = dict(zip(pairs.archs, pairs.latencies["cpu"], strict=True))
    y = np.array([lat[a] for a in archs])
    flops, params = [], []
    for arch in archs:
        model = space.build(arch, **build)
        flops.append(count_flops(model, shape))
        params.append(count_params(model))
    flops, params = np.array(flops), np.array(params)
    tr, te = np.arange(n_train), np.arange(n_train, args.n)
    te_archs = [archs[i] for i in te]
    print(f"  re-measuring the {len(te)} held-out networks", flush=True)
    again = measured_pairs(space, te_archs, shape, **measure, seed=args.seed + 1)
    lat2 = dict(zip(again.archs, again.latencies["cpu"], strict=True))
    y2 = np.array([lat2[a] for a in te_archs])

    rows: list[tuple[str, np.ndarray, float]] = []
    settings = PredictorSettings(epochs=args.epochs, ensemble=args.ensemble, seed=args.seed)
    encodings = ["auto", "one-hot"] if args.space == "darts" else ["auto"]
    for enc in encodings:
        t0 = time.perf_counter()
        model = LatencyPredictor(settings, space=space, encoding=enc)
        model.fit([archs[i] for i in tr], y[tr], devices=["cpu"])
        kind = model.encoding.kind
        net = "GCN" if model.encoding.is_graph else "MLP"
        rows.append((f"{kind} {net}", model.predict(te_archs), time.perf_counter() - t0))
    rows.append(("FLOPs, isotonic", flops_baseline(flops[tr], y[tr], flops[te]), 0.0))
    rows.append(("params, isotonic", flops_baseline(params[tr], y[tr], params[te]), 0.0))
    rows.append(("re-measurement", y2, 0.0))

    threads = torch.get_num_threads()
    print(
        f"\nLatency predictor on the {args.space} space, CPU latency measured here (batch 1, "
        f"1 thread, {args.clock} clock, fastest of {args.rounds} rounds of a median of "
        f"{args.repeats}): "
        f"{args.n} networks {build} at {shape}, "
        f"{n_train} to train, {len(te)} held out; seed {args.seed}; ensemble {args.ensemble}, "
        f"{args.epochs} epochs; torch threads {threads}"
    )
    print(
        f"held-out latencies: {y[te].min():.2f} .. {y[te].max():.2f} ms (median "
        f"{np.median(y[te]):.2f}); measuring took {measure_s:.0f} s"
    )
    header = (
        f"{'predictor':<22} {'Spearman':>9} {'Kendall':>8} {'MAPE %':>7} {'medAPE %':>9} "
        f"{'MAPE / FLOPs':>13} {'fit s':>6}"
    )
    print(header)
    print("-" * len(header))
    flops_mape = float(ape(rows[len(encodings)][1], y[te]).mean())
    for name, pred, fit_s in rows:
        errs = ape(pred, y[te])
        print(
            f"{name:<22} {spearman(pred, y[te]):>9.4f} {kendall(pred, y[te]):>8.4f} "
            f"{errs.mean():>7.1f} {np.median(errs):>9.1f} {errs.mean() / flops_mape:>13.2f} "
            f"{fit_s:>6.0f}"
        )
    print(
        "\n(re-measurement: the same held-out networks measured again, the best any predictor "
        "can do against this noise; MAPE / FLOPs < 1: better than the FLOPs fit)"
    )
    return 0


def ape(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Absolute percentage errors, %."""
    return np.abs(pred - true) / np.abs(true) * 100.0


def flops_baseline(
    flops_train: np.ndarray, y_train: np.ndarray, flops_test: np.ndarray
) -> np.ndarray:
    """An isotonic (monotone increasing) fit of latency on FLOPs."""
    from sklearn.isotonic import IsotonicRegression

    fit = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(flops_train, y_train)
    return np.maximum(fit.predict(flops_test), 1e-9)


def run_seed(
    table: TableEvaluator,
    devices: list[str],
    seed: int,
    n_train: int,
    n_test: int,
    settings: PredictorSettings,
    per_device: bool,
) -> tuple[dict[str, dict[str, float]], float]:
    columns = [f"latency_ms_{d}" for d in devices]
    values, archs = table.matrix([*columns, "flops"])
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(archs))
    train, test = order[:n_train], order[n_train : n_train + n_test]
    tr_archs = [archs[i] for i in train]
    te_archs = [archs[i] for i in test]
    flops = values[:, -1]
    started = time.perf_counter()
    preds: dict[str, np.ndarray] = {}
    if per_device:
        for k, d in enumerate(devices):
            model = LatencyPredictor(settings).fit(tr_archs, {d: values[train, k]})
            preds[d] = model.predict(te_archs, d)
    else:
        model = LatencyPredictor(settings).fit(
            tr_archs, {d: values[train, k] for k, d in enumerate(devices)}
        )
        all_preds = model.predict_all(te_archs)
        preds = {d: all_preds[:, k] for k, d in enumerate(devices)}
    fit_s = time.perf_counter() - started
    out: dict[str, dict[str, float]] = {}
    for k, d in enumerate(devices):
        y_te = values[test, k]
        base = flops_baseline(flops[train], values[train, k], flops[test])
        out[d] = {
            "gnn_spearman": spearman(preds[d], y_te),
            "gnn_mape": float(ape(preds[d], y_te).mean()),
            "gnn_medape": float(np.median(ape(preds[d], y_te))),
            "flops_spearman": spearman(flops[test], y_te),
            "flops_mape": float(ape(base, y_te).mean()),
            "flops_medape": float(np.median(ape(base, y_te))),
        }
    return out, fit_s


def fmt(values: list[float], digits: int) -> str:
    mean = float(np.mean(values))
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f}±{float(np.std(values)):.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--space",
        choices=["nb201", *MEASURED_SPACES],
        default="nb201",
        help="nb201: the table's device latencies; darts, mobilenet: networks measured here",
    )
    parser.add_argument("--table", default=None, help="NB201 table or folder ($PARETUNE_NB201)")
    parser.add_argument("--devices", default=",".join(DEFAULT_DEVICES))
    parser.add_argument("--train", type=int, default=None, help="nb201: 500; else 2/3 of --n")
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--n", type=int, default=300, help="networks measured (darts, mobilenet)")
    parser.add_argument("--seed", type=int, default=0, help="sample/split/model seed (measured)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per round")
    parser.add_argument(
        "--rounds", type=int, default=2, help="rounds per network, the fastest kept (busy box)"
    )
    parser.add_argument(
        "--clock",
        choices=["cpu", "wall"],
        default="cpu",
        help="cpu: the thread's CPU time per call (other processes' load does not count); wall",
    )
    parser.add_argument("--seeds", default="0", help="comma-separated split/model seeds")
    parser.add_argument("--epochs", type=int, default=PredictorSettings.epochs)
    parser.add_argument("--ensemble", type=int, default=PredictorSettings.ensemble)
    parser.add_argument("--per-device", action="store_true", help="one model per device")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    if args.space != "nb201":
        return measured_benchmark(args)
    if args.train is None:
        args.train = 500
    table = TableEvaluator(resolve_table_path(args.table))
    devices = [d for d in args.devices.split(",") if d]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    results: dict[str, dict[str, list[float]]] = {d: {} for d in devices}
    fit_times = []
    for seed in seeds:
        settings = PredictorSettings(epochs=args.epochs, ensemble=args.ensemble, seed=seed)
        per_seed, fit_s = run_seed(
            table, devices, seed, args.train, args.test, settings, args.per_device
        )
        fit_times.append(fit_s)
        for d, row in per_seed.items():
            for k, v in row.items():
                results[d].setdefault(k, []).append(v)
        print(f"seed {seed}: trained in {fit_s:.0f} s", flush=True)

    mode = "one model per device" if args.per_device else "one model, one output per device"
    print(
        f"\nLatency predictor (GCN, {mode}, ensemble {args.ensemble}, {args.epochs} epochs): "
        f"{args.train} training / {args.test} test architectures, seeds {seeds}"
    )
    header = (
        f"{'device':<13} {'GNN Spearman':>13} {'GNN MAPE %':>11} {'GNN medAPE %':>13} "
        f"{'FLOPs Spearman':>15} {'FLOPs MAPE %':>13} {'FLOPs medAPE %':>15}  verdict"
    )
    print(header)
    print("-" * len(header))
    misses = []
    for d in devices:
        r = results[d]
        met = float(np.mean(r["gnn_spearman"])) >= TARGET_SPEARMAN
        beats = all(
            g > f for g, f in zip(r["gnn_spearman"], r["flops_spearman"], strict=True)
        ) and all(g < f for g, f in zip(r["gnn_mape"], r["flops_mape"], strict=True))
        verdict = ("target met" if met else "BELOW TARGET") + (
            ", beats FLOPs" if beats else ", does NOT beat FLOPs"
        )
        if not (met and beats):
            misses.append(d)
        print(
            f"{d:<13} {fmt(r['gnn_spearman'], 4):>13} {fmt(r['gnn_mape'], 1):>11} "
            f"{fmt(r['gnn_medape'], 1):>13} {fmt(r['flops_spearman'], 4):>15} "
            f"{fmt(r['flops_mape'], 1):>13} {fmt(r['flops_medape'], 1):>15}  {verdict}"
        )
    print(
        f"\ntarget: Spearman >= {TARGET_SPEARMAN} on every device and better than FLOPs "
        f"(Spearman and MAPE); training time per seed {np.mean(fit_times):.0f} s"
    )
    if misses:
        print(f"missed on: {', '.join(misses)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
