"""Valuation fidelity of PertNAS's perturbations on digits (NB201 cells).

For ``--networks`` expanded networks (a random compact network with one random edge holding
all 4 operations, summed) and every operation k of that edge (4 pairs per network), compare

* the perturbation valuation: train the expanded network ``--epochs``, mask k, restore weights
  and optimizer, fine-tune F steps, ``delta = acc(without k) - acc(with all)``
  (:func:`paretune.objectives.pertnas_valuation.value_job`), with
* the stand-alone difference of the same edit: the network without k trained from scratch
  (same epochs, same recipe) minus the expanded network trained from scratch.

Prints Spearman's rho (and Kendall's tau) between the two over all pairs, and the rank
correlation within networks (the selection only compares options of one edge).

    nice -n 5 .venv/bin/python benchmarks/pertnas_fidelity.py --networks 8
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
from scipy.stats import kendalltau, spearmanr

from paretune.objectives import make_evaluator
from paretune.objectives.pertnas_valuation import check_params, train_job, value_job


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20, help="fine-tune steps F")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ev = make_evaluator(
        "train",
        space={"kind": "nb201"},
        dataset="digits",
        channels=8,
        cells_per_stage=1,
        energy_meter="estimate",
    )
    p = check_params({"batch_size": 64, "lr": 0.2}, [("accuracy", "max")], "nb201", 1)
    rng = np.random.default_rng(args.seed)
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.networks):
            opts = [[int(rng.integers(1, 5))] for _ in range(6)]
            e = int(rng.integers(6))
            opts[e] = [1, 2, 3, 4]
            job = {"key": f"net{n}", "options": opts, "epochs": args.epochs, "lr_factor": 0.4}
            meta = train_job(ev, job, p, ["accuracy"], args.seed, f"{tmp}/{n}")
            for k in opts[e]:
                val = {**job, "key": f"net{n}-k{k}", "edge": e, "option": k, "steps": args.steps}
                r = value_job(ev, val, p, ["accuracy"], args.seed, f"{tmp}/{n}")
                cut = [list(o) for o in opts]
                cut[e] = [o for o in opts[e] if o != k]
                sa = train_job(
                    ev,
                    {**job, "key": f"net{n}", "options": cut},
                    p,
                    ["accuracy"],
                    args.seed,
                    f"{tmp}/{n}-sa{k}",
                )
                rows.append((n, e, k, r["delta"]["accuracy"], sa["accuracy"] - meta["accuracy"]))
                print(
                    f"net {n} edge {e} op {k}: perturbation {rows[-1][3]:+.2f}  "
                    f"stand-alone {rows[-1][4]:+.2f}",
                    flush=True,
                )
    pert = np.array([r[3] for r in rows])
    sa = np.array([r[4] for r in rows])
    rho, prho = spearmanr(pert, sa)
    tau, _ = kendalltau(pert, sa)
    within = []
    for n in range(args.networks):
        sel = [i for i, r in enumerate(rows) if r[0] == n]
        if np.ptp(sa[sel]) > 0 and np.ptp(pert[sel]) > 0:
            within.append(spearmanr(pert[sel], sa[sel])[0])
    top = sum(
        int(np.argmin(pert[[i for i, r in enumerate(rows) if r[0] == n]]))
        == int(np.argmin(sa[[i for i, r in enumerate(rows) if r[0] == n]]))
        for n in range(args.networks)
    )
    print()
    print(
        f"pairs: {len(rows)} ({args.networks} networks x 4 options), epochs {args.epochs}, "
        f"F {args.steps}, seed {args.seed}, {time.perf_counter() - started:.0f} s"
    )
    print("| measure | value |")
    print("|---|---|")
    print(f"| Spearman rho (all pairs) | {rho:.3f} (p = {prho:.3g}) |")
    print(f"| Kendall tau (all pairs) | {tau:.3f} |")
    print(f"| mean Spearman within a network | {np.mean(within):.3f} ({len(within)} networks) |")
    print(f"| most important option agrees | {top}/{args.networks} |")


if __name__ == "__main__":
    main()
