"""PertNAS as published (``search.mode: supernet``) vs stand-alone PertNAS vs random search.

Measured side by side in one process (no Ray; one torch thread), on scikit-learn's digits with
the NAS-Bench-201 cell network and the small settings of ``conf/pertnas_supernet_digits.yaml``
(C=8, one cell per stage, stand-alone training 4 epochs; the search's ``search.params``: a
population of 2, 2 epochs per network, F = 10 / 15, 3 lineages): objectives validation accuracy
(max) and parameters (min). The structure and the evaluator, hypervolume and reference are
those of ``benchmarks/tnd_supernet.py`` (both from ``benchmarks/equal_compute.py``).

* ``supernet-pertnas``: the plan of :mod:`paretune.search_algos.perturbation_supernet` run to
  its end job by job (:func:`paretune.objectives.pertnas_valuation.run_plan`: expansions,
  valuations' fine-tunes, partial supernets, fine retrains), then the lineages' genotypes
  retrained stand-alone like a trial (``--epochs``).
* ``standalone-pertnas`` (``mode: standalone``, today's engine, default settings) and
  ``random``: stand-alone trials of ``--epochs`` epochs (the ``train`` evaluator), as many as
  the supernet search's training compute of the same seed buys (rounded up).

Compute = training sample-steps: images through a forward+backward weight step, of every
training pass (the supernet search's networks and fine-tunes, and every stand-alone training).
Hypervolume: of every stand-alone-trained result of a method (its trials, or the retrained
genotypes), as in ``benchmarks/tnd_supernet.py``; mean and standard deviation over ``--seeds``.

    nice -n 5 .venv/bin/python -m benchmarks.pertnas_search           # about 20 min, 2 cores
    .venv/bin/python -m benchmarks.pertnas_search --seeds 1 --n-iter 1,2
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import equal_compute as ec  # noqa: E402
from paretune.objectives.pertnas_valuation import (  # noqa: E402
    arch_of_options,
    check_params,
    run_plan,
)
from paretune.search_algos.perturbation import PerturbationEvolution  # noqa: E402
from paretune.search_algos.perturbation_supernet import PertNASPlan  # noqa: E402

OBJ = ec.OBJ
CONF = Path(__file__).resolve().parents[1] / "conf" / "pertnas_supernet_digits.yaml"


def search_params(n_iter: int) -> dict:
    """The shipped digits config's ``search.params`` (and its lineage count), with ``n_iter``."""
    conf = yaml.safe_load(CONF.read_text())
    params = {**conf["search"]["params"], "n_iter": n_iter}
    return check_params(params, OBJ, "nb201", conf["search"]["num_samples"])


def supernet(n_iter: int, epochs: int, seed: int) -> dict:
    ev = ec.evaluator(epochs, seed)
    p = search_params(n_iter)
    plan = PertNASPlan.from_params([[1, 2, 3, 4]] * 6, 5, OBJ, p, seed)
    names = [n for n, _ in OBJ]
    with tempfile.TemporaryDirectory() as tmp:
        results = run_plan(plan, ev, p, names, seed, tmp)
    train = sum(int(r.get("train_samples", 0)) for r in results.values())
    archs = []
    for options in plan.finals(results):
        arch = tuple(arch_of_options(ev.space, options))
        if arch not in archs:
            archs.append(arch)
    points = ec.retrain(ev, archs)
    train += len(points) * ec.trial_steps(ev, epochs)
    return {"points": points, "train": train, "jobs": len(results), "final": archs}


def standalone(engine_name: str, budget: int, epochs: int, seed: int) -> dict:
    return ec.standalone(engine_name, PerturbationEvolution, budget, epochs, seed)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4, help="epochs of a stand-alone training")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument(
        "--n-iter", default="1", help="supernet iterations to run, comma-separated (e.g. 1,2)"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    iters = [int(i) for i in args.n_iter.split(",")]
    trial = ec.trial_steps(ec.evaluator(args.epochs, 0), args.epochs)
    rows: dict[str, dict[str, list]] = {}
    budgets = []

    def record(name: str, seed: int, out: dict, wall: float) -> None:
        extra = f" jobs/trials={out['jobs']}"
        if "final" in out:
            extra += f" finals={[list(a) for a in out['final']]}"
        ec.record(rows, name, seed, out, wall, ("train", "jobs"), extra)

    for seed in range(args.seeds):
        budget = None
        for n in iters:
            t0 = time.perf_counter()
            out = supernet(n, args.epochs, seed)
            record(f"supernet-pertnas n_iter={n}", seed, out, time.perf_counter() - t0)
            if budget is None:  # the stand-alone methods get the first variant's compute
                budget = math.ceil(out["train"] / trial)
        budgets.append(budget)
        for name in ("standalone-pertnas", "random"):
            t0 = time.perf_counter()
            out = standalone(name.split("-")[0], budget, args.epochs, seed)
            record(name, seed, out, time.perf_counter() - t0)
    p = search_params(iters[0])
    print()
    print(
        f"digits, NB201 cell C=8 N=1, stand-alone training {args.epochs} epochs "
        f"({trial} sample-steps a trial); supernet: population {p['population']}, "
        f"{p['epochs']} epochs a network, F {p['f_expand']}/{p['f_fine']}, "
        f"{len(p['lineages'])} lineages; stand-alone budgets {budgets} trials; "
        f"seeds {list(range(args.seeds))}"
    )
    ref = rows["standalone-pertnas"]
    columns = [
        ("method", 28),
        ("HV mean", 8),
        ("sd", 7),
        ("HV/standalone", 14),
        ("HV/random", 10),
        ("train sample-steps", 19),
        ("compute/standalone", 19),
        ("jobs", 6),
        ("wall s", 7),
    ]
    ec.print_table(
        columns,
        (
            [
                name,
                f"{np.mean(r['hv']):.4f}",
                f"{np.std(r['hv']):.4f}",
                f"{np.mean(r['hv']) / np.mean(ref['hv']):.3f}",
                f"{np.mean(r['hv']) / np.mean(rows['random']['hv']):.3f}",
                f"{np.mean(r['train']):.0f}",
                f"{np.mean(r['train']) / np.mean(ref['train']):.3f}",
                f"{np.mean(r['jobs']):.1f}",
                f"{np.mean(r['wall']):.1f}",
            ]
            for name, r in rows.items()
        ),
    )
    print(
        "HV: of the method's stand-alone-trained results (reference 0 %, 0.1 M params, "
        "normalised); sd over seeds; compute/standalone: training sample-steps / "
        "standalone-pertnas's."
    )


if __name__ == "__main__":
    main()
