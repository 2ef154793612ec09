"""Peak memory of one PertNAS valuation trial against a DARTS weighted supernet (the paper's
headline: about 80% less search memory), over the same DARTS space and network.

* ``valuation``: PertNAS's search network (``search.mode: supernet``): one compact DARTS cell
  (one operation per edge) shared by every cell, one edge expanded to all 7 operations
  (outputs summed); the trial loads it, masks one option and fine-tunes ``--steps`` steps
  (:func:`paretune.objectives.pertnas_valuation.value_job`'s work, on synthetic images).
* ``darts``: DARTS's weighted supernet: every edge of both cells holds all 7 operations, the
  edge output is ``softmax(alpha)``-weighted, ``--steps`` weight steps.

Same network (``--channels``, ``--layers``), batch and input size. Each measurement runs in a
fresh process (spawned, so CUDA works): CPU = peak resident memory (``VmHWM``, reset through
``/proc/self/clear_refs``) minus the resident memory before the network is built; CUDA =
``torch.cuda.max_memory_allocated`` (peak reset before building) when ``--device cuda``.

    nice -n 5 .venv/bin/python benchmarks/pertnas_supernet_memory.py
    .venv/bin/python benchmarks/pertnas_supernet_memory.py --device cuda --batch 64 --input 32
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
from pathlib import Path


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def _measure(kind: str, a: dict, q: mp.Queue) -> None:
    import torch
    from torch import nn

    from paretune.objectives.pertnas_valuation import edge_weights
    from paretune.spaces.darts import DartsSpace
    from paretune.spaces.supernet import build_supernet

    torch.set_num_threads(1)
    dev = torch.device(a["device"])
    x = torch.randn(a["batch"], 3, a["input"], a["input"], device=dev)
    y = torch.randint(0, 10, (a["batch"],), device=dev)
    # warm torch's autograd and allocator on a throwaway network (paid alike by both)
    warm = nn.Conv2d(3, 4, 3).to(dev)
    warm(x).sum().backward()
    del warm
    space = DartsSpace()
    ops = list(range(1, 8))
    if kind == "valuation":
        import numpy as np

        if a["seed"] >= 0:  # a member's compact cell, drawn as the plan does
            rng = np.random.default_rng(a["seed"])
            cell = [[int(rng.choice(ops))] for _ in range(14)]
        else:
            cell = [[4]] * 14
        cell[a["edge"]] = ops
        options = cell + cell
    else:
        options = [ops] * 28
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    try:
        Path("/proc/self/clear_refs").write_text("5")
        before = _rss_kb("VmRSS:")
    except OSError:
        before = _rss_kb("VmRSS:")
    torch.manual_seed(0)
    layers = a["layers"] if kind == "valuation" else a["darts_layers"]
    net = build_supernet(
        space, options, channels=a["channels"], layers=layers, in_channels=3, num_classes=10
    ).to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    if kind == "valuation":
        weights = edge_weights(net, a["edge"], 5)  # mask sep_conv_5x5 on the expanded edge
    else:
        alpha = 1e-3 * torch.randn(28, 8, device=dev)
        weights = [torch.softmax(alpha[e], 0) for e in range(28)]
    params = sum(p.numel() for p in net.parameters())
    for _ in range(a["steps"]):
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(net(x, weights=weights), y).backward()
        opt.step()
    out = {"kind": kind, "params_m": params / 1e6, "rss_mb": (_rss_kb("VmHWM:") - before) / 1024}
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        out["cuda_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    q.put(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--layers", type=int, default=5, help="cells (the authors' search: 5)")
    ap.add_argument(
        "--darts-layers", type=int, default=None, help="the supernet's cells (DARTS search: 8)"
    )
    ap.add_argument("--seed", type=int, default=0, help="compact cell draw (-1: sep_conv_3x3)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--input", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--edge", type=int, default=13, help="the expanded edge")
    a = vars(ap.parse_args())
    if a["darts_layers"] is None:
        a["darts_layers"] = a["layers"]
    ctx = mp.get_context("spawn")
    rows = {}
    for kind in ("valuation", "darts"):
        q = ctx.Queue()
        proc = ctx.Process(target=_measure, args=(kind, a, q))
        proc.start()
        rows[kind] = q.get(timeout=1800)
        proc.join()
    v, d = rows["valuation"], rows["darts"]
    print(
        f"DARTS space, 7 operations, C={a['channels']}, cells {a['layers']} (PertNAS) / "
        f"{a['darts_layers']} (DARTS), compact cell seed {a['seed']}, batch "
        f"{a['batch']}, {a['input']}x{a['input']} input, {a['steps']} steps, {a['device']}"
    )
    print("| measure | PertNAS valuation trial | DARTS weighted supernet | ratio |")
    print("|---|---|---|---|")
    print(
        f"| parameters (M) | {v['params_m']:.3f} | {d['params_m']:.3f} | "
        f"{v['params_m'] / d['params_m']:.3f} |"
    )
    print(
        f"| CPU peak RSS increase (MB) | {v['rss_mb']:.1f} | {d['rss_mb']:.1f} | "
        f"{v['rss_mb'] / d['rss_mb']:.3f} |"
    )
    if "cuda_mb" in v:
        print(
            f"| CUDA max allocated (MB) | {v['cuda_mb']:.1f} | {d['cuda_mb']:.1f} | "
            f"{v['cuda_mb'] / d['cuda_mb']:.3f} |"
        )
    else:
        print("| CUDA max allocated | no GPU (run with --device cuda) | | |")
    print("target: ratio <= 0.25")


if __name__ == "__main__":
    main()
