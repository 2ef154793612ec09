"""PertNAS's networks and valuations in torch (no Ray): train an expanded network, value a
perturbation (``algorithms.md`` section 1.4; the authors' ``search_evolutionary.py``).

A *search network* holds, on every search edge, the options a job lists: one on a compact edge,
several on an expanded edge (their outputs summed, unweighted, as the authors' mixed op with
masks in {0, 1}), none on an edge the topology stage removed. It is the weight-sharing supernet
of :mod:`paretune.spaces.supernet` built with exactly those options (options not listed hold no
weights) and run with weights of ones. On DARTS the search edges are the 14 edges of one cell
shared by the normal and the reduction cells, as the authors' search (one cell type).

* :func:`train_job` builds the network from scratch (the authors rebuild without inheriting),
  trains ``epochs`` epochs (SGD, momentum, weight decay, cosine to ``lr_min`` stepped per
  epoch, gradient clipping), measures its validation accuracy and costs, and saves weights and
  optimizer state to a checkpoint folder (``net.pt``, loaded with ``weights_only=True``, and
  ``meta.json``).
* :func:`value_job` loads that checkpoint, masks the option (weight 0; ``option=None`` masks
  the edge's single option, i.e. removes the edge), restores weights *and* optimizer state,
  fine-tunes ``steps`` SGD steps with the option masked, and reports, for every objective,
  ``delta = metric(without) - metric(with)``: accuracy from the fine-tuned network against the
  trained one, costs (params, FLOPs, latency, energy) measured on the network built without
  the option against the network with all.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from paretune.spaces.supernet import CellSupernet, build_supernet

NET_PT = "net.pt"
META_JSON = "meta.json"
COSTS = ("params", "flops", "latency", "latency_batch", "energy", "energy_dynamic")
ACCURACY = "accuracy"

# search.params of `search.algorithm: pertnas` with `search.mode: supernet` (the paper's values
# in the comments where the default differs).
DEFAULTS: dict[str, Any] = {
    "population": 4,  # P compact networks (npop)
    "n_iter": 1,  # iterations (fresh populations) of the expansion; the matrix is their running mean
    "epochs": 5,  # training epochs of every network (expanded, partial, retrained)
    "lr": 0.2176,  # base learning rate: expansions and fine/topology retrains use lr / 2.5,
    "lr_min": 1e-3,  # the partial supernet lr / 3; cosine to lr_min
    "momentum": 0.9,
    "weight_decay": 3e-4,
    "grad_clip": 5.0,
    "batch_size": 256,
    "f_expand": 70,  # fine-tune steps F per valuation, per stage
    "f_fine": 130,
    "f_topology": 180,
    "coarse_keep": 2,
    "lineages": None,  # count or list of {objective: weight}; default search.num_samples
    "spread": 0.8,  # the largest total cost weight of the generated lineages
    "topology": None,  # default: true on darts
    "eval_batches": None,  # validation batches per accuracy (None: the whole split)
}


def _bad(key: str, value: Any, why: str) -> ValueError:
    return ValueError(f"search.params.{key} = {value!r}: {why}")


def check_params(
    params: Mapping[str, Any],
    objectives: Sequence[tuple[str, str]],
    space_kind: str,
    num_samples: int,
) -> dict[str, Any]:
    """``search.params`` completed with defaults, or ``ValueError`` naming the first bad one."""
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise _bad(unknown[0], params[unknown[0]], f"unknown (allowed: {', '.join(DEFAULTS)})")
    out = {**DEFAULTS, **params}
    for key in ("population", "n_iter", "epochs", "batch_size", "coarse_keep"):
        v = out[key]
        low = 2 if key == "batch_size" else 1
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise _bad(key, v, f"must be an integer >= {low}")
    for key in ("f_expand", "f_fine", "f_topology"):
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise _bad(key, v, "must be an integer >= 0 (fine-tune steps)")
    for key in ("lr", "lr_min", "momentum", "weight_decay", "grad_clip"):
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise _bad(key, v, "must be a finite number >= 0")
    s = out["spread"]
    if isinstance(s, bool) or not isinstance(s, int | float) or not 0 <= s <= 1:
        raise _bad("spread", s, "must be a number in [0, 1]")
    eb = out["eval_batches"]
    if eb is not None and (isinstance(eb, bool) or not isinstance(eb, int) or eb < 1):
        raise _bad("eval_batches", eb, "must be an integer >= 1 or null")
    topo = out["topology"]
    if topo is None:
        out["topology"] = space_kind == "darts"
    elif not isinstance(topo, bool) or (topo and space_kind != "darts"):
        raise _bad("topology", topo, "must be true or false (true only on darts)")
    names = [n for n, _ in objectives]
    dirs = dict(objectives)
    if ACCURACY not in names or dirs[ACCURACY] != "max":
        raise ValueError(
            f"objectives = {names}: pertnas's supernet mode values options by the network's "
            "'accuracy' (direction max), which must be one of them"
        )
    for n in names:
        if n != ACCURACY and n not in COSTS:
            raise ValueError(
                f"objectives: {n!r} has no valuation in pertnas's supernet mode "
                f"(allowed: accuracy, {', '.join(COSTS)})"
            )
        if n in COSTS and dirs[n] != "min":
            raise ValueError(f"objectives: {n!r} must have direction 'min' (a cost)")
    lin = out["lineages"]
    if lin is None:
        lin = max(1, int(num_samples))
    if isinstance(lin, int) and not isinstance(lin, bool):
        if lin < 1:
            raise _bad("lineages", lin, "must be an integer >= 1 or a list of weight maps")
        from paretune.search_algos.perturbation_supernet import lineage_weights

        out["lineages"] = lineage_weights(objectives, lin, ACCURACY, float(s))
    elif isinstance(lin, list) and lin:
        weights = []
        for i, w in enumerate(lin):
            if not isinstance(w, Mapping) or not w:
                raise _bad(f"lineages[{i}]", w, "must be a map {objective: weight}")
            for n, v in w.items():
                if n not in names:
                    raise _bad(f"lineages[{i}].{n}", v, f"not an objective (objectives: {names})")
                ok = isinstance(v, int | float) and not isinstance(v, bool)
                if not ok or not math.isfinite(v) or v < 0:
                    raise _bad(f"lineages[{i}].{n}", v, "must be a finite number >= 0")
            if not any(float(v) > 0 for v in w.values()):
                raise _bad(f"lineages[{i}]", w, "needs a weight > 0")
            weights.append({n: float(v) for n, v in w.items()})
        out["lineages"] = weights
    else:
        raise _bad("lineages", lin, "must be an integer >= 1 or a non-empty list of weight maps")
    return out


# ---------------------------------------------------------------------- networks
def supernet_options(space_kind: str, options: Sequence[Sequence[int]]) -> list[list[int]]:
    """The supernet's edge options of search-edge ``options`` (DARTS: the cell is shared by
    the normal and the reduction cells, so its 14 edges appear twice)."""
    opts = [list(map(int, o)) for o in options]
    return opts + [list(o) for o in opts] if space_kind == "darts" else opts


def space_kind(space: Any) -> str:
    from paretune.spaces.darts import DartsSpace

    return "darts" if isinstance(space, DartsSpace) else "nb201"


def build_network(
    ev: Any, options: Sequence[Sequence[int]], seed: int, settings: Mapping[str, Any] | None = None
) -> CellSupernet:
    """The search network of ``options`` (fresh weights drawn from ``seed``) on ``ev``'s device."""
    data = ev.data()
    torch.manual_seed(int(seed))
    kw = dict(settings) if settings is not None else dict(ev.build_kwargs(data))
    net = build_supernet(ev.space, supernet_options(space_kind(ev.space), options), **kw)
    return net.to(ev.device)


def edge_weights(
    net: CellSupernet, mask_edge: int | None = None, mask_option: int | None = None
) -> list[torch.Tensor]:
    """Ones on every allowed option (an unweighted sum), 0 on the masked one (``mask_option``
    ``None``: every option of ``mask_edge``); DARTS masks the shared cell's edge in both cells."""
    device = next(net.parameters()).device
    n = len(net.ops)
    shared = 14 if space_kind(net.space) == "darts" else None
    out = []
    for e, opts in enumerate(net.edge_options):
        w = torch.zeros(n, device=device)
        w[list(opts)] = 1.0
        if mask_edge is not None and (e == mask_edge or (shared and e == mask_edge + shared)):
            if mask_option is None:
                w.zero_()
            else:
                w[int(mask_option)] = 0.0
        out.append(w)
    return out


class Fixed(nn.Module):
    """A search network with fixed edge weights as a plain ``model(x)`` (for the meters)."""

    def __init__(self, net: CellSupernet, weights: Sequence[torch.Tensor]) -> None:
        super().__init__()
        self.net = net
        self.weights = list(weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, weights=self.weights)


def accuracy(model: nn.Module, data: Any, device: Any, batches: int | None = None) -> float:
    """Validation accuracy (%) in eval mode."""
    model.eval()
    correct = seen = 0
    x, y = data.valid.x, data.valid.y
    with torch.no_grad():
        for b, i in enumerate(range(0, len(x), 256)):
            if batches is not None and b >= batches:
                break
            out = model(x[i : i + 256].to(device))
            correct += int((out.argmax(1).cpu() == y[i : i + 256]).sum())
            seen += len(out)
    return 100.0 * correct / max(seen, 1)


def costs(ev: Any, model: nn.Module, names: Sequence[str]) -> dict[str, float]:
    """The cost objectives ``names`` of ``model``, measured as the retraining evaluator does."""
    from paretune.objectives.measure import count_energy_inputs, count_params

    names = {n for n in names if n in COSTS}
    data = ev.data()
    shape = (1, data.in_channels, data.input_size, data.input_size)
    out: dict[str, float] = {}
    if "params" in names:
        out["params"] = count_params(model)
    counts = (
        count_energy_inputs(model, shape) if names & {"flops", "energy", "energy_dynamic"} else None
    )
    if "flops" in names and counts is not None:
        out["flops"] = counts.macs_m
    if names & {"latency", "latency_batch"}:
        lat, _ = ev._latencies(model, data)
        out.update({k: v for k, v in lat.items() if k in names})
    if names & {"energy", "energy_dynamic"} and counts is not None:
        from paretune.objectives.train_measure import inference_energy

        energies, _, _ = inference_energy(ev, model, data, counts)
        out.update({k: v for k, v in energies.items() if k in names})
    model.eval()
    return out


def _valid_accuracy(
    ev: Any, net: CellSupernet, weights: Sequence[torch.Tensor], data: Any, p: Mapping[str, Any]
) -> float:
    """Validation accuracy of ``net`` run with edge ``weights`` (``eval_batches`` batches)."""
    return accuracy(Fixed(net, weights), data, ev.device, p.get("eval_batches"))


def _fresh_costs(ev: Any, options: Sequence[Sequence[int]], names: Sequence[str]) -> dict:
    """The costs ``names`` of the network of ``options`` built fresh (weights of seed 0)."""
    net = build_network(ev, options, 0)
    return costs(ev, Fixed(net, edge_weights(net)), names)


def _optimizer(net: nn.Module, p: Mapping[str, Any], lr_factor: float) -> torch.optim.SGD:
    return torch.optim.SGD(
        net.parameters(),
        lr=float(p["lr"]) * float(lr_factor),
        momentum=float(p["momentum"]),
        weight_decay=float(p["weight_decay"]),
    )


def _steps(
    net: CellSupernet,
    weights: Sequence[torch.Tensor],
    optimizer: torch.optim.Optimizer,
    data: Any,
    p: Mapping[str, Any],
    generator: torch.Generator,
    device: Any,
    limit: int | None,
) -> int:
    """One epoch of SGD steps (``limit``: at most that many steps, over as many epochs as
    needed); returns the images seen."""
    loss_fn = nn.CrossEntropyLoss()
    bs = int(p["batch_size"])
    seen = steps = 0
    while True:
        order = torch.randperm(len(data.train), generator=generator)
        for i in range(0, len(order), bs):
            if limit is not None and steps >= limit:
                return seen
            idx = order[i : i + bs]
            if len(idx) < 2:
                continue
            net.train()
            x, y = data.train.x[idx].to(device), data.train.y[idx].to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(net(x, weights=weights), y)
            loss.backward()
            if p["grad_clip"] > 0:
                nn.utils.clip_grad_norm_(net.parameters(), float(p["grad_clip"]))
            optimizer.step()
            seen += len(idx)
            steps += 1
        if limit is None or steps >= limit or steps == 0:
            return seen


def job_seed(seed: int, key: str) -> int:
    """A seed per job key (stable across processes)."""
    return (int(seed) * 1_000_003 + sum((i + 1) * ord(c) for i, c in enumerate(key))) % 2**31


def train_job(
    ev: Any,
    job: Mapping[str, Any],
    p: Mapping[str, Any],
    objectives: Sequence[str],
    seed: int,
    folder: str | Path,
) -> dict[str, Any]:
    """Train the job's network from scratch and save its checkpoint to ``folder``."""
    started = time.perf_counter()
    s = job_seed(seed, job["key"])
    data = ev.data()
    net = build_network(ev, job["options"], s)
    weights = edge_weights(net)
    opt = _optimizer(net, p, job["lr_factor"])
    epochs = int(job["epochs"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=p["lr_min"])
    gen = torch.Generator().manual_seed(s)
    seen = 0
    for _ in range(epochs):
        seen += _steps(net, weights, opt, data, p, gen, ev.device, None)
        sched.step()
    acc = _valid_accuracy(ev, net, weights, data, p)
    cost = costs(ev, Fixed(net, weights), objectives)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"model": net.state_dict(), "optimizer": opt.state_dict()}, folder / NET_PT)
    meta = {
        "key": job["key"],
        "options": job["options"],
        "accuracy": acc,
        "costs": cost,
        "epochs": epochs,
        "train_samples": seen,
        "lr_last": opt.param_groups[0]["lr"],
        "seed": s,
        "seconds": time.perf_counter() - started,
    }
    (folder / META_JSON).write_text(json.dumps(meta, indent=1))
    return meta


def load_checkpoint(
    ev: Any, folder: str | Path, p: Mapping[str, Any]
) -> tuple[CellSupernet, torch.optim.Optimizer, dict[str, Any]]:
    """The trained network, its optimizer (state restored) and its ``meta.json``."""
    folder = Path(folder)
    meta = json.loads((folder / META_JSON).read_text())
    state = torch.load(folder / NET_PT, map_location=ev.device, weights_only=True)
    net = build_network(ev, meta["options"], meta["seed"])
    net.load_state_dict(state["model"])
    opt = _optimizer(net, p, 1.0)
    opt.load_state_dict(state["optimizer"])
    return net, opt, meta


def value_job(
    ev: Any,
    job: Mapping[str, Any],
    p: Mapping[str, Any],
    objectives: Sequence[str],
    seed: int,
    folder: str | Path,
) -> dict[str, Any]:
    """Value one perturbation of the checkpoint in ``folder`` (see the module docstring)."""
    started = time.perf_counter()
    data = ev.data()
    net, opt, meta = load_checkpoint(ev, folder, p)
    if [list(o) for o in meta["options"]] != [list(o) for o in job["options"]]:
        raise ValueError(f"checkpoint {folder} holds other options than job {job['key']}")
    e, k = int(job["edge"]), job["option"]
    masked = edge_weights(net, e, k)
    gen = torch.Generator().manual_seed(job_seed(seed, job["key"]))
    steps = int(job["steps"])
    seen = _steps(net, masked, opt, data, p, gen, ev.device, steps) if steps > 0 else 0
    after = _valid_accuracy(ev, net, masked, data, p)
    # costs: the network built without the option against the one with all (side by side)
    without = [list(o) for o in job["options"]]
    without[e] = [] if k is None else [o for o in without[e] if o != int(k)]
    cost_names = [n for n in objectives if n in COSTS]
    cost_with = _fresh_costs(ev, job["options"], cost_names)
    cost_without = _fresh_costs(ev, without, cost_names)
    delta = {ACCURACY: after - float(meta["accuracy"])}
    for n in cost_names:
        delta[n] = float(cost_without[n]) - float(cost_with[n])
    return {
        "key": job["key"],
        "edge": e,
        "option": -1 if k is None else int(k),
        "steps": steps,
        "accuracy_with": float(meta["accuracy"]),
        "accuracy_without": after,
        "costs_with": cost_with,
        "costs_without": cost_without,
        "delta": delta,
        "train_samples": seen,
        "seconds": time.perf_counter() - started,
    }


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def run_job(
    ev: Any,
    job: Mapping[str, Any],
    p: Mapping[str, Any],
    objectives: Sequence[str],
    seed: int,
    root: str | Path,
) -> dict[str, Any]:
    """Run one plan job under ``root`` and return its result: a train job's checkpoint goes to
    ``root/ckpt/<key>/`` (written aside, then moved), a value job reads
    ``root/ckpt/<checkpoint>/``; the result (with the job) is written atomically to
    ``root/results/<key>.json``. A job whose result file exists is not run again."""
    root = Path(root)
    out = root / "results" / f"{job['key']}.json"
    if out.is_file():
        return json.loads(out.read_text())
    if job["kind"] == "train":
        final = root / "ckpt" / job["key"]
        tmp = root / "ckpt" / f".{job['key']}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        result = train_job(ev, job, p, objectives, seed, tmp)
        shutil.rmtree(final, ignore_errors=True)
        tmp.replace(final)
        result["checkpoint"] = str(final)
    else:
        result = value_job(ev, job, p, objectives, seed, root / "ckpt" / job["checkpoint"])
    result["job"] = dict(job)
    _write_json(out, result)
    return result


def run_plan(
    plan: Any,
    ev: Any,
    p: Mapping[str, Any],
    objectives: Sequence[str],
    seed: int,
    root: str | Path,
    results: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run a :class:`~paretune.search_algos.perturbation_supernet.PertNASPlan` to its end in
    this process, one job after another (no Ray: benchmarks and tests); returns the results
    by key (``results``: those already known, updated in place)."""
    results = {} if results is None else results
    while True:
        jobs = plan.frontier(results)
        if not jobs:
            return results
        for job in jobs:
            results[job["key"]] = run_job(ev, job, p, objectives, seed, root)


def arch_of_options(space: Any, options: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """The space's architecture of a final search network (one option per used edge)."""
    if any(o and len(o) != 1 for o in options):
        raise ValueError(f"final options {list(options)}: at most one option per edge")
    path = [int(o[0]) if o else None for o in options]
    if space_kind(space) == "darts":
        return _darts_arch(space, path)
    if any(k is None for k in path):
        raise ValueError(f"final options {list(options)}: an NB201 edge without an option")
    return tuple(space.validate_full(path))  # NB201: the architecture is the op per edge


def _darts_arch(space: Any, path: Sequence[int | None]) -> tuple[int, ...]:
    from paretune.spaces.darts import DARTS_EDGES
    from paretune.spaces.darts_ops import DARTS_OPS, Genotype

    cell = []
    for node in range(2, 6):
        used = [
            (DARTS_OPS[path[e]], src)
            for e, (src, dst) in enumerate(DARTS_EDGES)
            if dst == node and path[e] is not None
        ]
        if len(used) != 2:
            raise ValueError(f"DARTS node {node} uses {len(used)} edges, exactly 2 needed")
        cell += used
    genotype = Genotype(cell, [2, 3, 4, 5], list(cell), [2, 3, 4, 5])
    return tuple(space.validate_full(space.from_genotype(genotype)))


def heatmap_png(
    matrix: np.ndarray,
    edge_names: Sequence[str],
    op_names: Sequence[str],
    title: str,
    path: str | Path,
) -> None:
    """A heat map of one valuation matrix (edges x options) written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(matrix, dtype=float)
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(op_names), 1.0 + 0.35 * len(edge_names)))
    finite = m[np.isfinite(m)]
    lim = float(np.abs(finite).max()) if finite.size else 1.0
    im = ax.imshow(
        np.ma.masked_invalid(m), cmap="RdBu", vmin=-lim or -1, vmax=lim or 1, aspect="auto"
    )
    ax.set_xticks(range(len(op_names)), op_names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(edge_names)), edge_names, fontsize=7)
    for (i, j), v in np.ndenumerate(m):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.2g}", ha="center", va="center", fontsize=6)
    ax.set_title(title, fontsize=8)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


__all__ = [
    "COSTS",
    "DEFAULTS",
    "Fixed",
    "arch_of_options",
    "build_network",
    "check_params",
    "edge_weights",
    "heatmap_png",
    "load_checkpoint",
    "run_job",
    "run_plan",
    "supernet_options",
    "train_job",
    "value_job",
]
