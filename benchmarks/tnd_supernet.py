"""TND with weight sharing (``search.mode: supernet``) vs stand-alone TND vs random search.

Measured side by side in one process (no Ray; one torch thread), on scikit-learn's digits with
the NAS-Bench-201 cell network of ``conf/tnd_supernet_digits.yaml`` (C=8, one cell per stage,
8x8 inputs): objectives validation accuracy (max) and parameters (min).

* ``standalone-tnd`` (today's engine, default settings) and ``random``: ``--budget`` trials,
  each a network trained stand-alone for ``--epochs`` epochs (the ``train`` evaluator).
* ``supernet-tnd (product)`` / ``(pareto)``: three stages (5 -> 3 -> 2 -> 1 options per edge)
  of ``--stage-epochs`` epochs (half warm-up) on a fresh supernet each, M=10 paths per policy
  step, reward ``acc * (params / P_base[s]) ** w[s]`` (the config's P_base and w) or the
  Pareto margin; then its ``--final`` final genotypes retrained stand-alone like a trial.

Compute = training sample-steps: images through a forward+backward weight step (stand-alone
trials: trials x epochs x training images; supernet: the stages' weight steps plus the
retraining of the finals). Images only scored (forward, no backward) by the policy steps are
shown apart. Hypervolume: of every stand-alone-trained result of a method (its trials, or the
retrained finals), minimisation rows ``(-accuracy, params)`` against the fixed reference
``(0 %, 0.1 M)``, normalised by the box (100 x 0.1); mean over ``--seeds`` seeds.

    .venv/bin/python -m benchmarks.tnd_supernet            # about 20 minutes on 2 shared cores
    .venv/bin/python -m benchmarks.tnd_supernet --rewards both --seeds 3
    .venv/bin/python -m benchmarks.tnd_supernet --budget 8 --seeds 1 --stage-epochs 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import equal_compute as ec  # noqa: E402
from paretune.objectives.tnd_stage import TNDStage, check_params  # noqa: E402
from paretune.search_algos.shrinking import ProgressiveShrinking  # noqa: E402

OBJ = ec.OBJ


def standalone(engine_name: str, budget: int, epochs: int, seed: int) -> dict:
    out = ec.standalone(engine_name, ProgressiveShrinking, budget, epochs, seed, {"budget": budget})
    return {**out, "scored": 0}


def supernet(reward: str, stage_epochs: int, final: int, epochs: int, seed: int) -> dict:
    ev = ec.evaluator(epochs, seed)
    params = {
        "epochs": stage_epochs,
        "warmup": stage_epochs // 2,
        "samples": 10,
        "batch_size": 64,
        "val_batch_size": 64,
        "final": final,
        "reward": reward,
    }
    if reward == "product":
        params["targets"] = {"params": [0.05, 0.045, 0.04]}
        params["exponents"] = {"params": [-0.45, -0.20, -0.25]}
    p = check_params(params, OBJ, 5, final)
    options, train, scored = None, 0, 0
    for s in range(len(p["keep"]) - 1):
        stage = TNDStage(ev, s, options, p, OBJ, seed=seed)
        result = stage.train()
        options = result["edge_options"]
        train += result["train_samples"]
        scored += result["eval_samples"]
    points = ec.retrain(ev, result["final"])
    train += len(points) * ec.trial_steps(ev, epochs)
    return {"points": points, "train": train, "scored": scored, "final": result["final"]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=40, help="stand-alone trials per method")
    ap.add_argument("--epochs", type=int, default=4, help="epochs of a stand-alone training")
    ap.add_argument("--stage-epochs", type=int, default=4, help="epochs per supernet stage")
    ap.add_argument("--final", type=int, default=4, help="final genotypes retrained")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument(
        "--rewards", default="product", help="supernet rewards to run: product, pareto or both"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    methods = {
        "supernet-tnd (product)": lambda s: supernet(
            "product", args.stage_epochs, args.final, args.epochs, s
        ),
        "supernet-tnd (pareto)": lambda s: supernet(
            "pareto", args.stage_epochs, args.final, args.epochs, s
        ),
        "standalone-tnd": lambda s: standalone("tnd", args.budget, args.epochs, s),
        "random": lambda s: standalone("random", args.budget, args.epochs, s),
    }
    wanted = {"both": ("product", "pareto")}.get(args.rewards, (args.rewards,))
    methods = {
        k: v for k, v in methods.items() if not k.startswith("supernet") or k[14:-1] in wanted
    }
    runs: dict[str, dict[str, list]] = {}
    for name, run in methods.items():
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            out = run(seed)
            extra = f" finals={out['final']}" if "final" in out else ""
            ec.record(runs, name, seed, out, time.perf_counter() - t0, ("train", "scored"), extra)
    rows = {name: {k: float(np.mean(v)) for k, v in r.items()} for name, r in runs.items()}
    ref = max(rows["standalone-tnd"]["hv"], rows["random"]["hv"])
    ref_train = rows["standalone-tnd"]["train"]
    print()
    print(
        f"digits, NB201 cell C=8 N=1, stand-alone training {args.epochs} epochs; "
        f"budget {args.budget} trials; supernet stages {args.stage_epochs} epochs, "
        f"{args.final} finals; {args.seeds} seeds"
    )
    columns = [
        ("method", 24),
        ("HV", 7),
        ("sd", 6),
        ("HV/best standalone", 19),
        ("train sample-steps", 19),
        ("compute ratio", 14),
        ("scored images", 14),
        ("wall s", 7),
    ]
    ec.print_table(
        columns,
        (
            [
                name,
                f"{r['hv']:.4f}",
                f"{np.std(runs[name]['hv']):.4f}",
                f"{r['hv'] / ref:.3f}",
                f"{r['train']:.0f}",
                f"{ref_train / r['train']:.2f}x",
                f"{r['scored']:.0f}",
                f"{r['wall']:.1f}",
            ]
            for name, r in rows.items()
        ),
    )
    print(
        "HV/best standalone: against the better of standalone-tnd and random; compute ratio: "
        "standalone-tnd's training sample-steps / the method's."
    )


if __name__ == "__main__":
    main()
