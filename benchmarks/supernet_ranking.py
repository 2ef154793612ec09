"""How well does a weight-sharing supernet rank architectures? Kendall tau and Spearman rho
between the one-shot accuracy (supernet weights, BN recalibrated; the ``supernet`` evaluator)
and the accuracy of the same architectures trained stand-alone, on NB201 and DARTS cells.

For each space: ``--archs`` distinct architectures drawn uniformly (seed 0); each is trained
stand-alone for ``--sa-epochs`` epochs with each of ``--seeds`` seeds (the ``train`` evaluator's
recipe: SGD 0.05, momentum 0.9, wd 5e-4, cosine, batch 64) and its validation accuracy averaged
(the ground truth); ``--seeds`` supernets (SPOS, uniform paths) are trained for
``--sn-epochs`` epochs and score every architecture on the same validation split
(``SupernetEvaluator.score``: extraction, BN recalibrated on 10 training batches). Printed per
space: tau/rho/precision@top-10% for each supernet seed and for the seed-averaged one-shot
score, the stand-alone seed-vs-seed tau (how reproducible the ground truth itself is), and the
same on the architectures whose stand-alone accuracy is above chance. The ground truth is written
to ``--csv-dir`` (``supernet_standalone_<space>.csv``: arch, per-seed and mean stand-alone
accuracy, per-seed one-shot accuracy, params).

    nice -n 5 python -m benchmarks.supernet_ranking --out /work/notes/supernet_ranking.txt
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau, spearmanr

from paretune.objectives.measure import count_params
from paretune.objectives.oneshot import SupernetEvaluator
from paretune.objectives.supernet_train import SupernetTrainer, space_spec_of
from paretune.objectives.train import TrainEvaluator
from paretune.spaces import make_space


def standalone_accuracy(
    ev: TrainEvaluator, arch: tuple[int, ...], epochs: int, which: str = "valid"
) -> tuple[float, float, float]:
    """Accuracy (%) and cross-entropy on the evaluation split after training ``arch`` as the
    train evaluator does, and its params."""
    data = ev.data()
    model = ev.build(arch, data)
    n = len(data.train)
    steps = math.ceil(n / ev.batch_size)
    opt = torch.optim.SGD(
        model.parameters(), lr=ev.lr, momentum=ev.momentum, weight_decay=ev.weight_decay
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps)
    g = torch.Generator().manual_seed(ev.seed)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(n, generator=g)
        for i in range(0, n, ev.batch_size):
            idx = order[i : i + ev.batch_size]
            if len(idx) < 2:
                sched.step()
                continue
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(data.train.x[idx]), data.train.y[idx])
            loss.backward()
            opt.step()
            sched.step()
    acc, loss = split_scores(model, *eval_split(data, which))
    return acc, loss, count_params(model)


@torch.no_grad()
def split_scores(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Accuracy (%) and mean cross-entropy of ``model`` (eval mode) on ``x, y``."""
    model.eval()
    out = torch.cat([model(x[i : i + 512]) for i in range(0, len(x), 512)])
    loss = float(torch.nn.functional.cross_entropy(out, y))
    return 100.0 * float((out.argmax(1) == y).float().mean()), loss


def eval_split(data, which: str) -> tuple[torch.Tensor, torch.Tensor]:
    if which == "valid":
        return data.valid.x, data.valid.y
    return torch.cat([data.valid.x, data.test.x]), torch.cat([data.valid.y, data.test.y])


def precision_top(truth: np.ndarray, score: np.ndarray, frac: float = 0.1) -> float:
    k = max(1, int(round(frac * len(truth))))
    top_truth = set(np.argsort(-truth, kind="stable")[:k])
    top_score = set(np.argsort(-score, kind="stable")[:k])
    return len(top_truth & top_score) / k


def stats(truth: np.ndarray, score: np.ndarray) -> tuple[float, float, float]:
    return (
        float(kendalltau(truth, score).statistic),
        float(spearmanr(truth, score).statistic),
        precision_top(truth, score),
    )


def run_space(name: str, args: argparse.Namespace, log) -> dict:
    space = make_space(name)
    rng = np.random.default_rng(0)
    archs: list[tuple[int, ...]] = []
    seen: set[tuple[int, ...]] = set()
    while len(archs) < args.archs:
        a = space.sample(rng)
        if a not in seen:
            seen.add(a)
            archs.append(a)
    seeds = list(range(args.seeds))
    build = {"layers": args.darts_layers} if name == "darts" else None
    common = dict(channels=args.channels, cells_per_stage=1, dataset=args.dataset)
    out: dict = {"space": name, "archs": [space.encode(a) for a in archs]}

    # stand-alone ground truth
    started = time.perf_counter()
    sa = np.zeros((len(seeds), len(archs)))
    sa_loss = np.zeros((len(seeds), len(archs)))
    params = np.zeros(len(archs))
    for s in seeds:
        ev = TrainEvaluator(
            **common, seed=s, build=build, space={"kind": name}, energy_meter="estimate"
        )
        for j, a in enumerate(archs):
            sa[s, j], sa_loss[s, j], params[j] = standalone_accuracy(
                ev, a, args.sa_epochs, args.eval_split
            )
            if j % 10 == 9:
                log(f"{name}: stand-alone seed {s}: {j + 1}/{len(archs)}")
    out["standalone_s"] = time.perf_counter() - started

    # supernets
    started = time.perf_counter()
    oneshot = np.zeros((len(seeds), len(archs)))
    oneshot_loss = np.zeros((len(seeds), len(archs)))
    sn_train_acc = []
    with tempfile.TemporaryDirectory() as tmp:
        for s in seeds:
            trainer = SupernetTrainer(
                space, **common, build=build, seed=s, epochs=args.sn_epochs, batch_size=64
            )
            trainer.train()
            sn_train_acc.append(trainer.history[-1]["train_accuracy"])
            folder = Path(tmp) / f"{name}-{s}"
            trainer.save(folder)
            ev = SupernetEvaluator(
                checkpoint=str(folder),
                **common,
                build=build,
                seed=s,
                space=space_spec_of(space),
                bn_batches=10,
                energy_meter="estimate",
            )
            x, y = eval_split(ev.data(), args.eval_split)
            for j, a in enumerate(archs):
                oneshot[s, j], oneshot_loss[s, j] = split_scores(ev.network(a), x, y)
            log(f"{name}: supernet seed {s} trained and scored")
    out["supernet_s"] = time.perf_counter() - started
    truth = sa.mean(axis=0)
    rows = []
    for s in seeds:
        rows.append((f"supernet seed {s}", *stats(truth, oneshot[s])))
    rows.append(("supernet mean of seeds", *stats(truth, oneshot.mean(axis=0))))
    if len(seeds) >= 2:
        rows.append(("stand-alone seed 0 vs 1", *stats(sa[0], sa[1])))
    rows.append(
        (
            "mean of seeds, on cross-entropy",
            *stats(-sa_loss.mean(axis=0), -oneshot_loss.mean(axis=0)),
        )
    )
    if len(seeds) >= 2:
        rows.append(("stand-alone 0 vs 1, cross-entropy", *stats(-sa_loss[0], -sa_loss[1])))
    above = truth > args.chance
    if above.sum() >= 5:
        rows.append(
            (
                f"mean, stand-alone > {args.chance:.0f}% ({int(above.sum())})",
                *stats(truth[above], oneshot.mean(axis=0)[above]),
            )
        )
    out.update(
        rows=rows,
        truth=truth.tolist(),
        standalone=sa.tolist(),
        standalone_loss=sa_loss.tolist(),
        oneshot_loss=oneshot_loss.tolist(),
        oneshot=oneshot.tolist(),
        params=params.tolist(),
        supernet_train_accuracy=sn_train_acc,
    )
    if args.csv_dir:
        path = Path(args.csv_dir) / f"supernet_standalone_{name}.csv"
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(
                ["arch"]
                + [f"standalone_acc_seed{s}" for s in seeds]
                + ["standalone_acc_mean"]
                + [f"oneshot_acc_seed{s}" for s in seeds]
                + ["params_m"]
            )
            for j, a in enumerate(archs):
                w.writerow(
                    [space.encode(a)]
                    + [f"{sa[s, j]:.4f}" for s in seeds]
                    + [f"{truth[j]:.4f}"]
                    + [f"{oneshot[s, j]:.4f}" for s in seeds]
                    + [f"{params[j]:.6f}"]
                )
        out["csv"] = str(path)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spaces", default="nb201,darts")
    p.add_argument("--archs", type=int, default=50)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--sa-epochs", type=int, default=6)
    p.add_argument("--sn-epochs", type=int, default=40)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--darts-layers", type=int, default=3)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--chance", type=float, default=20.0)
    p.add_argument("--eval-split", choices=("valid", "valid+test"), default="valid")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--csv-dir", default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {msg}", file=sys.stderr, flush=True)

    results = [run_space(name, args, log) for name in args.spaces.split(",")]
    lines = [
        "Supernet ranking: one-shot accuracy (supernet weights, BN recalibrated) vs stand-alone",
        f"dataset {args.dataset}, {args.archs} uniformly drawn architectures per space, "
        f"{args.seeds} seeds, C={args.channels}, NB201 N=1 (3 cells + 2 reductions), "
        f"DARTS {args.darts_layers} cells; stand-alone {args.sa_epochs} epochs per seed "
        f"(ground truth: mean over seeds), supernet {args.sn_epochs} epochs SPOS uniform; "
        f"scored on {args.eval_split}",
        "",
        f"{'space':6} {'comparison':38} {'Kendall tau':>11} {'Spearman':>9} {'P@top10%':>9}",
    ]
    for r in results:
        for label, tau, rho, prec in r["rows"]:
            lines.append(f"{r['space']:6} {label:38} {tau:11.3f} {rho:9.3f} {prec:9.2f}")
        lines.append(
            f"{r['space']:6} time: stand-alone {r['standalone_s']:.0f} s, supernets "
            f"{r['supernet_s']:.0f} s (ratio {r['standalone_s'] / max(r['supernet_s'], 1e-9):.1f}x); "
            f"stand-alone acc range {min(r['truth']):.1f}-{max(r['truth']):.1f}%"
        )
    lines.append(f"total {time.perf_counter() - started:.0f} s")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
        Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
