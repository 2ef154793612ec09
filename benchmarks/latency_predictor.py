"""Latency predictor quality on the NB201 table: graph network vs a FLOPs-only baseline.

For each seed, 500 architectures (``--train``) are drawn at random for training and 2,000 others
(``--test``, disjoint) for testing. The graph network (:class:`LatencyPredictor`, one model with
an output per device by default, ``--per-device`` for one model per device) is trained on the
training archs' table latencies of every listed device; the FLOPs-only baseline is the best any
monotone function of FLOPs can do: its Spearman is the rank correlation of FLOPs with latency,
its MAPE that of an isotonic fit of latency on FLOPs over the same 500 training archs. Printed
per device: Spearman rank correlation and mean absolute percentage error (and the median APE,
which the few wild measurements of some devices do not dominate), mean over seeds (± std).

Usage::

    python benchmarks/latency_predictor.py                      # 6 devices, seed 0
    python benchmarks/latency_predictor.py --seeds 0,1,2 --devices raspi4,pixel3,fpga
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
    parser.add_argument("--table", default=None, help="NB201 table or folder ($PARETUNE_NB201)")
    parser.add_argument("--devices", default=",".join(DEFAULT_DEVICES))
    parser.add_argument("--train", type=int, default=500)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--seeds", default="0", help="comma-separated split/model seeds")
    parser.add_argument("--epochs", type=int, default=PredictorSettings.epochs)
    parser.add_argument("--ensemble", type=int, default=PredictorSettings.ensemble)
    parser.add_argument("--per-device", action="store_true", help="one model per device")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
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
