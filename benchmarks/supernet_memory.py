"""Peak memory of supernet training vs one stand-alone trial, each case in its own process.

A case trains ``--steps`` SGD steps on random batches of the dataset's shape (the data is
irrelevant to memory) and reports the process's peak RSS (``ru_maxrss``) and, on a GPU,
``torch.cuda.max_memory_allocated``. Cases per space and size:

* ``standalone``: the largest architecture (NB201: every edge ``nor_conv_3x3``; DARTS: every
  node ``sep_conv_5x5`` on inputs 0 and 1), the network a ``train`` trial builds;
* ``spos``: the supernet trained on one uniformly sampled path per step (what the
  ``supernet_training`` phase runs);
* ``weighted``: the supernet as DARTS trains it (every operation of every edge each step);
* ``idle``: the same process with the data, no network (the floor every case pays).

Ratios are to ``standalone`` of the same space and size, measured in the same run.

    nice -n 5 python -m benchmarks.supernet_memory --out /work/notes/supernet_memory.txt
    python -m benchmarks.supernet_memory --device cuda      # on a GPU: CUDA peaks too
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

SIZES = {
    # name: (space, channels, cells_per_stage or layers, input size, batch)
    "nb201-digits": ("nb201", 8, 1, 8, 64),
    "nb201-paper-mnist": ("nb201", 16, 5, 28, 64),
    "darts-digits": ("darts", 8, 3, 8, 64),
    "darts-search-mnist": ("darts", 16, 8, 28, 32),
}
CASES = ("idle", "standalone", "spos", "weighted")


def run_case(size: str, case: str, steps: int, device: str) -> dict:
    """Runs in the child process: build, train ``steps`` steps, return the peaks."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    space_name, c, depth, hw, batch = SIZES[size]
    dev = torch.device(device)
    x = torch.rand(batch, 1, hw, hw, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    started = time.perf_counter()
    if case != "idle":
        from paretune.spaces import make_space
        from paretune.spaces.darts import DARTS_OPS
        from paretune.spaces.nb201 import NB201_OPS
        from paretune.spaces.supernet import build_supernet

        space = make_space(space_name)
        settings = dict(channels=c, in_channels=1, num_classes=10)
        if space_name == "nb201":
            settings.update(cells_per_stage=depth, input_size=hw)
            largest = (NB201_OPS.index("nor_conv_3x3"),) * 6
        else:
            settings.update(layers=depth)
            sep5 = DARTS_OPS.index("sep_conv_5x5")
            largest = tuple(
                0 if d.name.endswith("_in") else sep5 for d in space.decisions
            )  # pair 0-1, sep_conv_5x5 on both edges
        if case == "standalone":
            net = space.build(largest, **settings).to(dev)
            forward = net
        else:
            net = build_supernet(space, **settings).to(dev)
            rng = np.random.default_rng(0)
            n_ops = len(net.ops)
            weights = [torch.full((n_ops,), 1.0 / n_ops, device=dev)] * net.num_edges

            def forward(inp):
                if case == "spos":
                    return net(inp, path=net.sample_path(rng))
                return net(inp, weights=weights)

        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        net.train()
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(forward(x), y).backward()
            opt.step()
        params = sum(p.numel() for p in net.parameters()) / 1e6
    else:
        params = 0.0
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    out = {
        "size": size,
        "case": case,
        "params_m": params,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "seconds": time.perf_counter() - started,
    }
    if dev.type == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default=",".join(SIZES))
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--child", nargs=2, metavar=("SIZE", "CASE"), help=argparse.SUPPRESS)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(run_case(*args.child, args.steps, args.device)))
        return 0
    rows = []
    for size in args.sizes.split(","):
        for case in args.cases.split(","):
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.supernet_memory",
                    "--child",
                    size,
                    case,
                    "--steps",
                    str(args.steps),
                    "--device",
                    args.device,
                ],
                capture_output=True,
                text=True,
                timeout=1200,
            )
            if proc.returncode != 0:
                print(f"{size} {case}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"{size} {case}: {rows[-1]}", file=sys.stderr, flush=True)
    cuda = args.device != "cpu"
    head = (
        f"{'size':20} {'case':11} {'params M':>9} {'peak RSS MB':>12} {'x standalone':>13} "
        f"{'above idle MB':>14} {'x (above idle)':>15}"
        + (f" {'CUDA peak MB':>13} {'x standalone':>13}" if cuda else "")
    )
    lines = [
        f"Peak memory: supernet training vs one stand-alone trial ({args.steps} SGD steps, "
        f"device {args.device}, one process per case, 1 thread)",
        "",
        head,
    ]
    for size in args.sizes.split(","):
        by = {r["case"]: r for r in rows if r["size"] == size}
        base = by.get("standalone")
        idle = by.get("idle", {}).get("peak_rss_mb", 0.0)
        for case in CASES:
            r = by.get(case)
            if r is None:
                continue
            ratio = r["peak_rss_mb"] / base["peak_rss_mb"] if base else float("nan")
            above = r["peak_rss_mb"] - idle
            base_above = (base["peak_rss_mb"] - idle) if base else float("nan")
            line = (
                f"{size:20} {case:11} {r['params_m']:9.3f} {r['peak_rss_mb']:12.0f} "
                f"{ratio:13.2f} {above:14.0f} {above / base_above if base_above else float('nan'):15.2f}"
            )
            if cuda and "cuda_peak_mb" in r:
                cr = r["cuda_peak_mb"] / base["cuda_peak_mb"] if base else float("nan")
                line += f" {r['cuda_peak_mb']:13.1f} {cr:13.2f}"
            lines.append(line)
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
