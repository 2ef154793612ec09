"""Peak memory of one-shot (DARTS-style) supernet training on a pruned space vs the whole space.

The paper (Rumiantsev & Coates 2025) reports 81% less GPU memory on DARTS after zero-shot
pruning: pruned operations hold no weights and are never run. Here, on the CPU, each case runs in
its own subprocess: build the supernet (``paretune.spaces.supernet.build_supernet``) of the space
(whole, or pruned by synflow: ``prune.samples`` cells scored, ``floor(ratio * |options|)``
operations removed per operation decision), then ``--steps`` steps of the weighted (softmax over
each edge's allowed operations: every allowed op runs forward and backward) training on random
32x32 batches, SGD on the weights and Adam on the architecture logits. Reported: the process's
peak RSS (``ru_maxrss``) and its growth during training over the RSS after building, and the
ratio pruned / whole. Usage::

    python benchmarks/prune_memory.py --out /work/notes/pruning_memory.txt
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SETTINGS = {
    "nb201": {"channels": 16, "cells_per_stage": 5},
    "darts": {"channels": 16, "layers": 8},
}
PRUNE_BUILD = {
    "nb201": {"channels": 8, "cells_per_stage": 1},
    "darts": {"channels": 8, "layers": 5},
}
OP_DECISIONS = {"nb201": None, "darts": ["*_op*"]}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1]) / 1024
    return float("nan")


def pruned_allowed(kind: str, ratio: float, samples: int, seed: int) -> list[list[int]]:
    import numpy as np

    from paretune.objectives.proxies import ProxyScorer
    from paretune.search_algos.pruning import prune, select_decisions
    from paretune.spaces import make_space

    space = make_space(kind)
    scorer = ProxyScorer(space, ["synflow"], seed=seed, build=PRUNE_BUILD[kind])
    rng = np.random.default_rng(seed)
    archs = [space.sample(rng) for _ in range(samples)]
    scores = [scorer.scores(a)["synflow"] for a in archs]
    chosen = select_decisions(space, OP_DECISIONS[kind])
    return prune(space, archs, scores, ratio=ratio, decisions=chosen).allowed


def case(kind: str, allowed: list[list[int]] | None, steps: int, batch: int) -> dict:
    """One training run in this process; returns memory figures (MB)."""
    import resource

    import torch

    from paretune.spaces import make_space
    from paretune.spaces.supernet import build_supernet

    torch.set_num_threads(1)
    torch.manual_seed(0)
    space = make_space(kind)
    if allowed is not None:
        space = space.restrict(allowed)
    net = build_supernet(space, **SETTINGS[kind])
    params = sum(p.numel() for p in net.parameters()) / 1e6
    n_ops = len(net.ops)
    mask = torch.full((net.num_edges, n_ops), float("-inf"))
    for e, opts in enumerate(net.edge_options):
        mask[e, list(opts)] = 0.0
    alpha = torch.zeros(net.num_edges, n_ops, requires_grad=True)
    w_opt = torch.optim.SGD(net.parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    a_opt = torch.optim.Adam([alpha], lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    before = rss_mb()
    net.train()
    start = time.perf_counter()
    for _ in range(steps):
        x = torch.randn(batch, 3, 32, 32)
        y = torch.randint(0, 10, (batch,))
        weights = list(torch.softmax(alpha + mask, dim=1).nan_to_num(0.0))
        out = net(x, weights=weights)
        out = out[0] if isinstance(out, tuple) else out
        loss = torch.nn.functional.cross_entropy(out, y)
        w_opt.zero_grad()
        a_opt.zero_grad()
        loss.backward()
        w_opt.step()
        a_opt.step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "params_m": params,
        "ops_kept": sum(len(o) for o in net.edge_options),
        "rss_built_mb": before,
        "peak_mb": peak,
        "growth_mb": peak - before,
        "s_per_step": (time.perf_counter() - start) / steps,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", default="nb201,darts")
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--case", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.case:  # the child: one measurement, JSON on stdout
        spec = json.loads(args.case)
        print(json.dumps(case(spec["kind"], spec["allowed"], args.steps, args.batch)))
        return
    lines = [
        f"One-shot (weighted, DARTS-style) supernet training, CPU, batch {args.batch} of 32x32, "
        f"{args.steps} steps, one subprocess per case; pruning: synflow on {args.samples} "
        f"sampled cells, ratio {args.ratio} of each operation decision's options removed",
        "",
        f"{'space':<7} {'case':<7} {'ops kept':>8} {'params M':>9} {'peak RSS MB':>12} "
        f"{'growth MB':>10} {'s/step':>7} {'peak ratio':>10} {'growth ratio':>12}",
    ]
    for kind in args.kinds.split(","):
        allowed = pruned_allowed(kind, args.ratio, args.samples, args.seed)
        results = {}
        for name, spec_allowed in (("whole", None), ("pruned", allowed)):
            spec = json.dumps({"kind": kind, "allowed": spec_allowed})
            proc = subprocess.run(
                [sys.executable, __file__, "--case", spec, "--steps", str(args.steps),
                 "--batch", str(args.batch)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        whole = results["whole"]
        for name, r in results.items():
            lines.append(
                f"{kind:<7} {name:<7} {r['ops_kept']:>8} {r['params_m']:>9.3f} "
                f"{r['peak_mb']:>12.0f} {r['growth_mb']:>10.0f} {r['s_per_step']:>7.2f} "
                f"{r['peak_mb'] / whole['peak_mb']:>10.2f} "
                f"{r['growth_mb'] / whole['growth_mb']:>12.2f}"
            )
        print("\n".join(lines[-2:]), flush=True)
    lines.append("")
    lines.append(
        "growth = peak RSS minus RSS after building the supernet (activations and optimiser "
        "state of training); the paper's -81% is GPU memory on DARTS."
    )
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
