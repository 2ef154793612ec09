"""NAS-LID on digits: ranking quality of the split supernet against the unsplit one, and memory.

Ground truth: the stand-alone accuracies of ``benchmarks/supernet_ranking.py``
(``/work/notes/supernet_standalone_nb201.csv``: 50 NB201 architectures, C=8, N=1, digits, mean of
2 seeds). One root supernet (SPOS uniform, ``--root-epochs``) is trained once; then, side by side
at the same extra compute (``2 x --finetune-epochs`` epochs of training):

* ``unsplit``: the root trained ``2 x finetune`` more epochs (whole space, from its weights);
* ``LID split``: NAS-LID's split of the root (LID profiles, cosine, spectral partition, best
  edge), each of the 2 sub-supernets fine-tuned ``finetune`` epochs from the root's weights;
* ``random split``: a random edge and a random 2-group partition of its options, same fine-tune.

Each architecture is scored on the validation split by the (sub-)supernet holding it (weights
extracted, batch norm recalibrated on 10 training batches); Kendall tau and Spearman with the
ground truth. Memory: peak RSS (``ru_maxrss``) of a fresh process that loads the root supernet and
(a) nothing more, (b) runs the LID split, (c) runs the gradient-matching criterion of GM-NAS on
the same batches (the gradient of the shared weights per option; what LID replaces), and the
parameters held by the leaves against the root.
    nice -n 5 python benchmarks/nas_lid.py --out /work/notes/nas_lid.txt
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau, spearmanr

from paretune.objectives.lid import lid_mle
from paretune.objectives.oneshot import SupernetEvaluator
from paretune.objectives.supernet_train import SupernetTrainer, load_supernet
from paretune.platform.nas_lid import check_split, inherit, split_supernet
from paretune.search_algos.lid_split import children
from paretune.spaces import make_space

GROUND_TRUTH = "/work/notes/supernet_standalone_nb201.csv"
COMMON = dict(channels=8, cells_per_stage=1, dataset="digits")


def trainer(epochs: int, edge_options=None, seed: int = 0) -> SupernetTrainer:
    return SupernetTrainer(
        {"kind": "nb201"},
        **COMMON,
        edge_options=edge_options,
        epochs=epochs,
        batch_size=64,
        seed=seed,
        threads=1,
    )


def finetune(parent: Path, edge_options, epochs: int, folder: Path, seed: int = 0) -> Path:
    t = trainer(epochs, edge_options, seed)
    inherit(t, parent)
    t.train()
    t.save(folder)
    return folder


def score(root: Path, leaves, archs, seed: int = 0) -> np.ndarray:
    ev = SupernetEvaluator(
        checkpoint=str(root),
        **COMMON,
        leaves=leaves,
        bn_batches=10,
        energy_meter="estimate",
        seed=seed,
    )
    data = ev.data()
    out = []
    for a in archs:
        model = ev.network(a)
        with torch.no_grad():
            pred = model(data.valid.x).argmax(1)
        out.append(100.0 * float((pred == data.valid.y).float().mean()))
    return np.array(out)


def paper_net(device: str = "cpu"):
    """NB201's supernet at the paper's size (C=16, N=5: 17 layers, 32x32x3 inputs, 10 classes)."""
    from paretune.spaces.supernet import build_supernet

    torch.manual_seed(0)
    net = build_supernet(
        make_space("nb201"),
        channels=16,
        cells_per_stage=5,
        input_size=32,
        in_channels=3,
        num_classes=10,
    )
    return net.to(device)


def grad_criterion(net, edge: int, x: torch.Tensor, y: torch.Tensor, rng) -> np.ndarray:
    """GM-NAS's criterion on ``edge`` (what LID replaces): per option, the gradient of the
    shared weights on the batch (one random context of the other edges), cosine between
    options."""
    net.train()
    context = net.sample_path(rng)
    grads = []
    for o in net.edge_options[edge]:
        context[edge] = o
        net.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x, path=context), y).backward()
        grads.append(
            torch.cat(
                [
                    p.grad.flatten()
                    for n, p in net.named_parameters()
                    if p.grad is not None and f"edges.{edge}." not in n
                ]
            )
        )
    gm = torch.stack(grads)
    gm = gm / gm.norm(dim=1, keepdim=True)
    return (gm @ gm.T).detach().cpu().numpy()


def memory_case(case: str, batch_size: int, device: str = "cpu") -> None:
    """Peak memory of one edge's split criterion on the paper-size supernet, batch of
    ``batch_size`` random 32x32 images (memory does not depend on the pixels)."""
    from paretune.objectives.lid import edge_similarity

    torch.set_num_threads(1)
    net = paper_net(device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, 32, 32, generator=g).to(device)
    y = torch.randint(10, (batch_size,), generator=g).to(device)
    rng = np.random.default_rng(0)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    if case == "lid":
        edge_similarity(net, 0, [x], rng, 20)
    elif case == "grad":
        grad_criterion(net, 0, x, y, rng)
    out = {
        "case": case,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "seconds": time.perf_counter() - started,
    }
    if device == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(out))


def params_of(folder: Path) -> int:
    net, _ = load_supernet(folder)
    return sum(p.numel() for p in net.parameters())


def memory_table(args: argparse.Namespace, log) -> None:
    """Peak memory of the split criteria, each in a fresh process (the paper-size supernet)."""
    mem = {}
    for case in ("idle", "lid", "grad"):
        cmd = [sys.executable, __file__, "--memory-case", case, "--device", args.device]
        cmd += ["--batch-size", str(args.batch_size)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        mem[case] = json.loads(proc.stdout.strip().splitlines()[-1])
    log("")
    log(
        f"Memory of one edge's split criterion: NB201 supernet C=16 N=5 (17 layers), batch "
        f"{args.batch_size} of 32x32x3, one random context, 5 options; fresh process each, "
        f"1 thread, {args.device}"
    )
    cuda = args.device == "cuda"
    head = f"{'case':34} {'peak RSS MB':>12} {'above idle':>11} {'seconds':>8}"
    log(head + (f" {'CUDA peak MB':>13}" if cuda else ""))
    for case, label in (
        ("idle", "build supernet + batch"),
        ("lid", "LID profiles (no grad)"),
        ("grad", "gradient matching (GM-NAS)"),
    ):
        m = mem[case]
        above = m["peak_rss_mb"] - mem["idle"]["peak_rss_mb"]
        row = f"{label:34} {m['peak_rss_mb']:12.0f} {above:11.0f} {m['seconds']:8.1f}"
        log(row + (f" {m['cuda_peak_mb']:13.0f}" if cuda else ""))
    above = {c: mem[c]["peak_rss_mb"] - mem["idle"]["peak_rss_mb"] for c in ("lid", "grad")}
    ratio = above["lid"] / max(above["grad"], 1e-9)
    log(f"LID / gradient matching, RSS above idle: {ratio:.2f} ({100 * (1 - ratio):.0f}% less)")
    if cuda:
        r = mem["lid"]["cuda_peak_mb"] / mem["grad"]["cuda_peak_mb"]
        log(f"LID / gradient matching, CUDA peak: {r:.2f} ({100 * (1 - r):.0f}% less)")


UNSPLIT = "unsplit, +2xF epochs"


def run_seed(seed: int, args: argparse.Namespace, archs, times: dict, log):
    """One seed: root, unsplit fine-tune, LID split, random split; the scores of each."""
    results: dict[str, np.ndarray] = {}

    def tick(key: str, t0: float) -> None:
        times[key] = times.get(key, 0.0) + time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        tmp_p = Path(tmp)
        t0 = time.perf_counter()
        root = tmp_p / "root"
        t = trainer(args.root_epochs, None, seed)
        t.train()
        t.save(root)
        tick("root", t0)
        log(
            f"seed {seed}: root supernet {args.root_epochs} epochs "
            f"(train acc {t.history[-1].get('train_accuracy', float('nan')):.1f}%)"
        )
        full = t.net.edge_options
        results["root only (no extra training)"] = score(root, None, archs, seed)
        t0 = time.perf_counter()
        unsplit = finetune(root, None, 2 * args.finetune_epochs, tmp_p / "unsplit", seed)
        tick("unsplit", t0)
        results[UNSPLIT] = score(unsplit, None, archs, seed)

        t0 = time.perf_counter()
        rec = split_supernet(
            root,
            full,
            check_split({"repeats": args.repeats, "batch_size": args.batch_size}),
            seed=seed,
        )
        tick("lid_split", t0)
        scores = {t.net.edge_names[int(e)]: round(v, 5) for e, v in rec["scores"].items()}
        log(
            f"seed {seed}: LID split edge {rec['edge_name']} groups "
            f"{[[t.net.ops[k] for k in g] for g in rec['groups']]} score {rec['score']:.5f}; "
            f"edge scores {scores}"
        )
        leaves = []
        t0 = time.perf_counter()
        for i, child in enumerate(rec["children"]):
            finetune(root, child, args.finetune_epochs, tmp_p / f"lid{i}", seed)
            leaves.append({"checkpoint": str(tmp_p / f"lid{i}"), "edge_options": child})
        tick("lid_finetune", t0)
        results["LID split (2), +F epochs each"] = score(root, leaves, archs, seed)
        leaf_params = [params_of(Path(leaf["checkpoint"])) for leaf in leaves]
        root_params = params_of(root)

        rr = np.random.default_rng(1000 + seed)
        edge = int(rr.integers(6))
        while True:
            labels = rr.integers(2, size=5)
            if 0 < labels.sum() < 5:
                break
        groups = [[k for k in range(5) if labels[k] == g] for g in (0, 1)]
        rleaves = []
        for i, child in enumerate(children(full, edge, groups)):
            finetune(root, child, args.finetune_epochs, tmp_p / f"rnd{i}", seed)
            rleaves.append({"checkpoint": str(tmp_p / f"rnd{i}"), "edge_options": child})
        results["random split (2), +F epochs each"] = score(root, rleaves, archs, seed)
        log(
            f"seed {seed}: random split edge {t.net.edge_names[edge]} groups "
            f"{[[t.net.ops[k] for k in g] for g in groups]}"
        )
    return results, rec, root_params, leaf_params


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--root-epochs", type=int, default=15)
    p.add_argument("--finetune-epochs", type=int, default=5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--truth", default=GROUND_TRUTH)
    p.add_argument("--out", default=None)
    p.add_argument("--memory-case", default=None, help=argparse.SUPPRESS)
    p.add_argument("--device", default="cpu", help="memory cases only: cpu or cuda")
    p.add_argument("--memory-only", action="store_true", help="only the memory table")
    args = p.parse_args(argv)
    if args.memory_case:
        memory_case(args.memory_case, args.batch_size, args.device)
        return 0
    if args.memory_only:
        memory_table(args, print)
        return 0
    torch.set_num_threads(1)
    lines: list[str] = []

    def log(msg: str) -> None:
        print(msg, flush=True)
        lines.append(msg)

    t_all = time.perf_counter()
    space = make_space("nb201")
    with open(args.truth) as f:
        rows = list(csv.DictReader(f))
    archs = [space.decode(r["arch"]) for r in rows]
    truth = np.array([float(r["standalone_acc_mean"]) for r in rows])
    truth0 = np.array([float(r["standalone_acc_seed0"]) for r in rows])
    truth1 = np.array([float(r["standalone_acc_seed1"]) for r in rows])

    # LID estimator on data of known dimension (quoted beside the ranking)
    rng = np.random.default_rng(0)
    est = []
    for d in (2, 5, 8):
        q, _ = np.linalg.qr(rng.standard_normal((64, d)))
        est.append((d, lid_mle(rng.standard_normal((2000, d)) @ q.T, 20)))
    log(
        "LID MLE (k=20, 2000 points, Gaussian on a d-dim subspace of R^64): "
        + ", ".join(f"d={d}: {v:.2f} ({100 * (v - d) / d:+.1f}%)" for d, v in est)
    )

    results: dict[str, list[np.ndarray]] = {}
    times: dict[str, float] = {}
    for seed in range(args.seeds):
        r, rec, root_params, leaf_params = run_seed(seed, args, archs, times, log)
        for k, v in r.items():
            results.setdefault(k, []).append(v)

    log("")
    log(
        f"Kendall tau / Spearman with stand-alone accuracy ({len(archs)} NB201 archs, digits, "
        f"C=8 N=1; {args.seeds} seeds; root {args.root_epochs} epochs, F = {args.finetune_epochs}; "
        f"split: R={args.repeats} batches of {args.batch_size}, k=20)"
    )
    log(
        f"{'scoring':36} {'tau mean':>9} {'tau sd':>7} {'rho mean':>9} {'tau, mean score':>16} "
        f"{'vs unsplit':>11}"
    )
    base = float(np.mean([kendalltau(truth, x).statistic for x in results[UNSPLIT]]))
    for name, runs in results.items():
        taus = [float(kendalltau(truth, x).statistic) for x in runs]
        rhos = [float(spearmanr(truth, x).statistic) for x in runs]
        tau_m = float(kendalltau(truth, np.mean(runs, axis=0)).statistic)
        log(
            f"{name:36} {np.mean(taus):9.3f} {np.std(taus):7.3f} {np.mean(rhos):9.3f} "
            f"{tau_m:16.3f} {np.mean(taus) - base:+11.3f}"
        )
    tau_sa = float(kendalltau(truth0, truth1).statistic)
    log(
        f"{'stand-alone seed 0 vs seed 1 (noise)':36} {tau_sa:7.3f} "
        f"{float(spearmanr(truth0, truth1).statistic):7.3f}"
    )
    memory_table(args, log)
    log(
        f"parameters: root supernet {root_params}, leaves {leaf_params} "
        f"(sum {sum(leaf_params)} = {sum(leaf_params) / root_params:.2f}x the root: the split "
        f"stores and serves 2 sub-supernets)"
    )
    log(
        f"time (all seeds): root {times['root']:.0f} s, unsplit fine-tune {times['unsplit']:.0f} s,"
        f" LID split {times['lid_split']:.0f} s, LID fine-tunes {times['lid_finetune']:.0f} s; "
        f"total {time.perf_counter() - t_all:.0f} s"
    )
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
