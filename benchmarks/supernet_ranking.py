"""How well does a weight-sharing supernet rank architectures? Kendall tau and Spearman rho
between the one-shot accuracy (supernet weights, BN recalibrated; the ``supernet`` evaluator)
and the accuracy of the same architectures trained stand-alone, on NB201 and DARTS cells.

For each space: ``--archs`` distinct architectures drawn uniformly (seed 0; degenerate cells
included); one data split (seed 0) for every run. Each architecture is trained stand-alone for
``--sa-epochs`` epochs with each of ``--seeds`` seeds (weights and batch order; the ``train``
evaluator's recipe: SGD 0.05, momentum 0.9, wd 5e-4, cosine, batch 64) and its accuracy averaged
(the ground truth). Short training (2 epochs on digits) is what separates the architectures by
more than seed noise; after 6 epochs every one of them is at 95-98%. For each supernet variant of
``--sn-variants`` (learning rate, weight decay, decay on BN weights, epochs), ``--sn-seeds``
supernets (SPOS, uniform paths) are trained and score every architecture
(``SupernetEvaluator.network``: extraction, BN recalibrated on ``--bn-batches`` training batches).
Printed per space: tau/rho/precision@top-10% of each variant (seed 0 and the seed-averaged score)
and of supernet seed 0 vs 1; the ground truth's split-half reliability (tau between the means of
even and odd seeds: the ceiling of any evaluator against a truth that noisy), its spread across
architectures and its noise (std of one seed around the mean). The ground truth is written to
``--csv-dir`` (``supernet_standalone_<space>.csv``). The stand-alone recipe changes for every
architecture alike with ``--sa-lr`` (peak lr), ``--sa-warmup`` (linear warm-up, fraction of the
steps) and ``--sa-clip`` (gradient-norm clip); ``--sn-variants ""`` probes the ground truth alone.

    nice -n 5 python -m benchmarks.supernet_ranking --spaces nb201 --seeds 12 \\
        --eval-split valid+test --out /work/notes/ranking_nb201.txt
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
    ev: TrainEvaluator,
    arch: tuple[int, ...],
    epochs: int,
    which: str = "valid",
    seed: int | None = None,
    lr: float | None = None,
    warmup: float = 0.0,
    clip: float = 0.0,
) -> tuple[float, float, float]:
    """Accuracy (%) and cross-entropy on the evaluation split after training ``arch`` as the
    train evaluator does, and its params. ``seed`` (default: the evaluator's) seeds the
    initial weights and the batch order; the data split stays the evaluator's. ``lr``
    (default: the evaluator's) is the peak learning rate; ``warmup`` the fraction of the steps
    with a linear warm-up before the cosine decay; ``clip`` > 0 clips the gradient norm."""
    seed = ev.seed if seed is None else seed
    if not 0.0 <= warmup < 1.0:
        raise ValueError(f"warmup = {warmup!r}: a fraction of the steps in [0, 1)")
    if clip < 0:
        raise ValueError(f"clip = {clip!r}: a gradient norm >= 0 (0: no clipping)")
    data = ev.data()
    torch.manual_seed(seed)
    model = ev.space.build(arch, **ev.build_kwargs(data))
    n = len(data.train)
    steps = math.ceil(n / ev.batch_size)
    opt = torch.optim.SGD(
        model.parameters(),
        lr=ev.lr if lr is None else lr,
        momentum=ev.momentum,
        weight_decay=ev.weight_decay,
    )
    total = epochs * steps
    warm = int(round(warmup * total))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(total - warm, 1)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    g = torch.Generator().manual_seed(seed)
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
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
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


VARIANT_KEYS = {"lr": float, "wd": float, "bnwd": int, "epochs": int, "momentum": float}


def parse_variants(text: str, epochs: int) -> list[tuple[str, dict]]:
    """``name:key=value,...;name2:...`` -> [(name, SupernetTrainer kwargs)]; keys: lr, wd,
    bnwd (0/1: weight decay on batch-norm weights and biases), epochs, momentum."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, rest = part.partition(":")
        kw = {"epochs": epochs}
        for item in filter(None, (i.strip() for i in rest.split(","))):
            key, _, value = item.partition("=")
            if key not in VARIANT_KEYS:
                raise SystemExit(f"--sn-variants: {key!r} unknown (allowed: {list(VARIANT_KEYS)})")
            kw[key] = VARIANT_KEYS[key](value)
        trainer_kw = {"epochs": kw["epochs"]}
        for key, target in (("lr", "lr"), ("wd", "weight_decay"), ("momentum", "momentum")):
            if key in kw:
                trainer_kw[target] = kw[key]
        if "bnwd" in kw:
            trainer_kw["bn_weight_decay"] = bool(kw["bnwd"])
        out.append((name.strip(), trainer_kw))
    return out


def split_half(matrix: np.ndarray) -> float:
    """Kendall tau between the means of the even and the odd seeds (rows): the reliability
    of a seed-averaged ranking, the ceiling any evaluator can reach against it."""
    if len(matrix) < 2:
        return float("nan")
    return float(kendalltau(matrix[0::2].mean(0), matrix[1::2].mean(0)).statistic)


def spread_noise(matrix: np.ndarray) -> tuple[float, float]:
    """Std across architectures of the seed mean, and the pooled std of one seed around it."""
    mean = matrix.mean(0)
    k = len(matrix)
    noise = float(np.sqrt(((matrix - mean) ** 2).sum(0).mean() / max(k - 1, 1)))
    return float(mean.std(ddof=1)), noise


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
    cells = 1 if name == "darts" else args.nb201_cells
    common = dict(channels=args.channels, cells_per_stage=cells, dataset=args.dataset)
    out: dict = {"space": name, "archs": [space.encode(a) for a in archs]}
    # one data split (seed 0) for every run: seeds vary weights, batch order and paths only
    ev = TrainEvaluator(
        **common, seed=0, build=build, space={"kind": name}, energy_meter="estimate"
    )

    started = time.perf_counter()
    sa = np.zeros((len(seeds), len(archs)))
    sa_loss = np.zeros((len(seeds), len(archs)))
    params = np.zeros(len(archs))
    for s in seeds:
        for j, a in enumerate(archs):
            sa[s, j], sa_loss[s, j], params[j] = standalone_accuracy(
                ev,
                a,
                args.sa_epochs,
                args.eval_split,
                seed=s,
                lr=args.sa_lr,
                warmup=args.sa_warmup,
                clip=args.sa_clip,
            )
        log(f"{name}: stand-alone seed {s} done")
    out["standalone_s"] = time.perf_counter() - started
    truth = sa.mean(axis=0)
    spread, noise = spread_noise(sa)
    ceiling = split_half(sa)
    rows = [("stand-alone split-half (ceiling)", *stats(sa[0::2].mean(0), sa[1::2].mean(0)))]
    rows.append(("stand-alone seed 0 vs 1", *stats(sa[0], sa[1])))
    rows.append(("params (capacity) vs stand-alone", *stats(truth, params)))
    variants = {}
    with tempfile.TemporaryDirectory() as tmp:
        for vname, trainer_kw in parse_variants(args.sn_variants, args.sn_epochs):
            started = time.perf_counter()
            oneshot = np.zeros((args.sn_seeds, len(archs)))
            for s in range(args.sn_seeds):
                trainer = SupernetTrainer(
                    space,
                    **common,
                    build=build,
                    seed=s,
                    split_seed=0,
                    batch_size=64,
                    **trainer_kw,
                )
                trainer.train()
                folder = Path(tmp) / f"{name}-{vname}-{s}"
                trainer.save(folder)
                sev = SupernetEvaluator(
                    checkpoint=str(folder),
                    **common,
                    build=build,
                    seed=0,
                    space=space_spec_of(space),
                    bn_batches=args.bn_batches,
                    energy_meter="estimate",
                )
                x, y = eval_split(sev.data(), args.eval_split)
                for j, a in enumerate(archs):
                    oneshot[s, j] = split_scores(sev.network(a), x, y)[0]
                log(f"{name}: supernet {vname} seed {s} trained and scored")
            elapsed = time.perf_counter() - started
            rows.append((f"{vname}: supernet seed 0", *stats(truth, oneshot[0])))
            rows.append((f"{vname}: supernet mean of seeds", *stats(truth, oneshot.mean(0))))
            rows.append((f"{vname}: supernet seed 0 vs 1", *stats(oneshot[0], oneshot[1])))
            variants[vname] = {"settings": trainer_kw, "oneshot": oneshot.tolist(), "s": elapsed}
    out.update(
        rows=rows,
        truth=truth.tolist(),
        standalone=sa.tolist(),
        standalone_loss=sa_loss.tolist(),
        params=params.tolist(),
        variants=variants,
        spread=spread,
        noise=noise,
        ceiling=ceiling,
    )
    if args.csv_dir:
        path = Path(args.csv_dir) / f"supernet_standalone_{name}.csv"
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(
                ["arch"]
                + [f"standalone_acc_seed{s}" for s in seeds]
                + ["standalone_acc_mean"]
                + [f"oneshot_{v}_mean" for v in variants]
                + ["params_m"]
            )
            for j, a in enumerate(archs):
                w.writerow(
                    [space.encode(a)]
                    + [f"{sa[s, j]:.4f}" for s in seeds]
                    + [f"{truth[j]:.4f}"]
                    + [f"{np.mean(np.asarray(v['oneshot'])[:, j]):.4f}" for v in variants.values()]
                    + [f"{params[j]:.6f}"]
                )
        out["csv"] = str(path)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spaces", default="nb201,darts")
    p.add_argument("--archs", type=int, default=50)
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--sa-epochs", type=int, default=2)
    p.add_argument(
        "--sa-lr", type=float, default=None, help="stand-alone peak lr (default: train's 0.05)"
    )
    p.add_argument(
        "--sa-warmup", type=float, default=0.0, help="stand-alone linear warm-up, fraction of steps"
    )
    p.add_argument(
        "--sa-clip", type=float, default=0.0, help="stand-alone gradient-norm clip (0: off)"
    )
    p.add_argument("--sn-epochs", type=int, default=40)
    p.add_argument("--sn-seeds", type=int, default=2)
    p.add_argument(
        "--sn-variants",
        default="old:lr=0.05,wd=3e-4,bnwd=1;new:lr=0.025,wd=3e-4,bnwd=0",
        help="supernet trainings compared side by side: name:lr=..,wd=..,bnwd=0|1,epochs=..;...",
    )
    p.add_argument("--bn-batches", type=int, default=10)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--nb201-cells", type=int, default=1)
    p.add_argument("--darts-layers", type=int, default=3)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--eval-split", choices=("valid", "valid+test"), default="valid+test")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--csv-dir", default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    for field in ("seeds", "sn_seeds"):
        if getattr(args, field) < 2:
            raise SystemExit(f"--{field.replace('_', '-')}={getattr(args, field)}: at least 2")
    if not 0.0 <= args.sa_warmup < 1.0:
        raise SystemExit(f"--sa-warmup={args.sa_warmup}: a fraction of the steps in [0, 1)")
    if args.sa_clip < 0:
        raise SystemExit(f"--sa-clip={args.sa_clip}: a gradient norm >= 0 (0: off)")
    if args.sa_lr is not None and args.sa_lr <= 0:
        raise SystemExit(f"--sa-lr={args.sa_lr}: a learning rate > 0")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {msg}", file=sys.stderr, flush=True)

    results = [run_space(name, args, log) for name in args.spaces.split(",")]
    lines = [
        "Supernet ranking: one-shot accuracy (supernet weights, BN recalibrated) vs stand-alone",
        f"dataset {args.dataset} (one split, seed 0), {args.archs} uniformly drawn architectures "
        f"per space, {args.seeds} stand-alone and {args.sn_seeds} supernet seeds (weights, order, "
        f"paths), C={args.channels}, NB201 "
        f"N={args.nb201_cells}, DARTS {args.darts_layers} cells; stand-alone {args.sa_epochs} "
        f"epochs (train evaluator recipe, lr {args.sa_lr or 'default'}, warm-up {args.sa_warmup}, "
        f"clip {args.sa_clip}; ground truth: mean over seeds); supernets SPOS uniform "
        f"{args.sn_epochs} epochs, variants {args.sn_variants}; scored on {args.eval_split}",
        "",
        f"{'space':6} {'comparison':38} {'Kendall tau':>11} {'Spearman':>9} {'P@top10%':>9}",
    ]
    for r in results:
        for label, tau, rho, prec in r["rows"]:
            lines.append(f"{r['space']:6} {label:38} {tau:11.3f} {rho:9.3f} {prec:9.2f}")
        times = ", ".join(f"{k} {v['s']:.0f} s" for k, v in r["variants"].items())
        lines.append(
            f"{r['space']:6} ground truth: acc {min(r['truth']):.1f}-{max(r['truth']):.1f}%, "
            f"spread (std over archs) {r['spread']:.2f} pts, noise (std of one seed) "
            f"{r['noise']:.2f} pts, ratio {r['spread'] / max(r['noise'], 1e-9):.2f}; "
            f"split-half ceiling tau {r['ceiling']:.3f}"
        )
        lines.append(
            f"{r['space']:6} time: stand-alone {r['standalone_s']:.0f} s; supernets {times}"
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
