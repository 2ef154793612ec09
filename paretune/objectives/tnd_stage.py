"""One stage of TND-NAS on a weight-sharing supernet (no Ray): weights, policy, shrink.

A :class:`TNDStage` builds a fresh supernet of the stage's allowed operations (optionally
deeper, ``add_cells``) and a fresh :class:`~paretune.search_algos.shrinking.policy.EdgePolicy`,
then trains for ``epochs`` epochs (``algorithms.md`` §2.4, the authors' ``train_search.py``):

* every training step is a *weight step*: SGD (momentum, weight decay, cosine over the stage's
  epochs, gradient-norm clipping) on the cross-entropy of a training batch through the supernet,
  either the softmax(logits)-weighted sum of every edge's operations (``weight_step: weighted``,
  the authors' DARTS relaxation; the logits get no gradient) or one path drawn from the policy
  (``weight_step: path``, SPOS-style, cheaper);
* after the ``warmup`` epochs, every ``rl_interval`` steps a *policy step* comes first: ``M``
  paths are drawn from the policy and scored on one random validation batch with the shared
  weights (no grad, batch-norm in training mode, as the authors do), their costs (params,
  FLOPs, latency, energy: whatever the objectives name) are measured once per architecture on
  its compact stand-alone network and cached; the reward is ``acc * prod_k (m_k/T_k)**w_k``
  with per-stage targets and exponents (``reward: product``) or the Pareto margin against the
  recent samples (``reward: pareto``); one REINFORCE step updates the logits.

At the end the stage shrinks every edge to the next count of ``keep`` by the lowest softmax
(the last stage drops ``none`` first, as the authors' code) and, after the last stage, lists
the final genotypes: the most probable architectures of the last stage's distribution, the
argmax first.

Checkpoints (:meth:`TNDStage.save`) are a folder with ``stage.pt`` (supernet, optimizer and
schedule ``state_dict`` s and the batch-order generator; ``torch.load(weights_only=True)``) and
``stage.json`` (policy, RNG, history, cost cache, counters, the result when done).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from paretune.search_algos.shrinking.policy import (
    EdgePolicy,
    pareto_rewards,
    product_reward,
    stage_value,
)
from paretune.spaces.base import Arch, SearchSpace
from paretune.spaces.supernet import CellSupernet, build_supernet

STAGE_JSON = "stage.json"
STAGE_PT = "stage.pt"
FORMAT = 1
COSTS = ("params", "flops", "latency", "latency_batch", "energy", "energy_dynamic")
WEIGHT_STEPS = ("weighted", "path")
REWARDS = ("product", "pareto")

# search.params of `search.mode: supernet` with `search.algorithm: tnd`, and their defaults.
DEFAULTS: dict[str, Any] = {
    "epochs": 6,  # per stage (the authors: 25, later 16)
    "warmup": 3,  # weight-only epochs per stage (the authors: 15, later 8)
    "keep": None,  # operations per edge at each stage's start, then the final count (1)
    "add_cells": None,  # extra cells per stage (deeper supernets; the authors: 0, 6, 12 layers)
    "samples": 10,  # M
    "rl_interval": 1,  # weight steps per policy step
    "arch_lr": 6e-3,
    "arch_betas": [0.5, 0.999],
    "arch_weight_decay": 1e-3,
    "arch_clip": 5.0,
    "baseline_decay": 0.95,
    "init_std": 1e-3,
    "weight_step": "weighted",
    "lr": 0.04,
    "momentum": 0.9,
    "weight_decay": 3e-4,
    "grad_clip": 5.0,
    "batch_size": 64,
    "val_batch_size": 64,
    "reward": None,  # product when targets are given, else pareto
    "accuracy": None,  # the accuracy objective (default: the first max objective)
    "targets": {},  # {objective: T or [T per stage]}
    "exponents": {},  # {objective: w or [w per stage]}
    "pareto_window": 100,
    "no_zero_last": True,
    "final": None,  # final genotypes retrained (default: search.num_samples)
}


def _bad(key: str, value: Any, why: str) -> ValueError:
    return ValueError(f"search.params.{key} = {value!r}: {why}")


def default_keep(num_ops: int) -> list[int]:
    """Operations kept per stage: NB201 (5) 5-3-2-1, DARTS (8) 8-5-3-1 (P-DARTS), else halving."""
    if num_ops == 5:
        return [5, 3, 2, 1]
    if num_ops == 8:
        return [8, 5, 3, 1]
    out = [num_ops]
    while out[-1] > 1:
        out.append(math.ceil(out[-1] / 2))
    return out


def check_params(
    params: Mapping[str, Any],
    objectives: Sequence[tuple[str, str]],
    num_ops: int,
    num_samples: int,
) -> dict[str, Any]:
    """``search.params`` completed with defaults, or ``ValueError`` naming the first bad one.

    ``objectives``: ``(name, direction)`` pairs; ``num_ops``: the space's operations."""
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise _bad(unknown[0], params[unknown[0]], f"unknown (allowed: {', '.join(DEFAULTS)})")
    out = {**DEFAULTS, **params}
    for key in ("epochs", "samples", "rl_interval", "batch_size", "val_batch_size"):
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < (2 if "batch" in key else 1):
            raise _bad(key, v, f"must be an integer >= {2 if 'batch' in key else 1}")
    w = out["warmup"]
    if isinstance(w, bool) or not isinstance(w, int) or not 0 <= w < out["epochs"]:
        raise _bad("warmup", w, f"must be an integer in 0..{out['epochs'] - 1} (epochs - 1)")
    for key in ("arch_lr", "arch_weight_decay", "arch_clip", "init_std", "lr", "momentum"):
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise _bad(key, v, "must be a finite number >= 0")
    for key in ("weight_decay", "grad_clip", "pareto_window"):
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
            raise _bad(key, v, "must be a number >= 0")
    d = out["baseline_decay"]
    if isinstance(d, bool) or not isinstance(d, int | float) or not 0 < d <= 1:
        raise _bad("baseline_decay", d, "must be in (0, 1]")
    b = out["arch_betas"]
    if not (isinstance(b, list | tuple) and len(b) == 2 and all(0 <= float(x) < 1 for x in b)):
        raise _bad("arch_betas", b, "must be two numbers in [0, 1)")
    if out["weight_step"] not in WEIGHT_STEPS:
        raise _bad("weight_step", out["weight_step"], f"allowed: {', '.join(WEIGHT_STEPS)}")
    keep = out["keep"] if out["keep"] is not None else default_keep(num_ops)
    if (
        not isinstance(keep, list | tuple)
        or len(keep) < 2
        or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in keep)
        or any(b > a for a, b in zip(keep, keep[1:], strict=False))
        or keep[0] > num_ops
    ):
        raise _bad(
            "keep",
            out["keep"],
            f"must be a non-increasing list of at least 2 counts in 1..{num_ops} "
            "(operations per edge at each stage's start, then the final count)",
        )
    out["keep"] = [int(k) for k in keep]
    stages = len(out["keep"]) - 1
    add = out["add_cells"] if out["add_cells"] is not None else [0] * stages
    if (
        not isinstance(add, list | tuple)
        or len(add) != stages
        or any(isinstance(a, bool) or not isinstance(a, int) or a < 0 for a in add)
    ):
        raise _bad("add_cells", out["add_cells"], f"must be {stages} integers >= 0 (one per stage)")
    out["add_cells"] = [int(a) for a in add]
    names = [n for n, _ in objectives]
    acc = out["accuracy"]
    if acc is None:
        maxes = [n for n, d in objectives if d == "max"]
        if not maxes:
            raise _bad("accuracy", acc, "no 'max' objective to use as the accuracy; name one")
        acc = maxes[0]
    elif acc not in names:
        raise _bad("accuracy", acc, f"not an objective (objectives: {', '.join(names)})")
    out["accuracy"] = acc
    for key in ("targets", "exponents"):
        given = out[key]
        if not isinstance(given, Mapping):
            raise _bad(key, given, "must be a mapping {objective: number or [one per stage]}")
        for name, v in given.items():
            if name not in names or name == acc or name not in COSTS:
                raise _bad(
                    key,
                    dict(given),
                    f"{name!r} is not a cost objective (objectives: {', '.join(names)}; "
                    f"costs: {', '.join(COSTS)})",
                )
            seq = [v] if isinstance(v, int | float) and not isinstance(v, bool) else v
            if (
                not isinstance(seq, list | tuple)
                or not seq
                or not all(
                    isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
                    for x in seq
                )
            ):
                raise _bad(key, dict(given), f"{name!r}: a number or a list of numbers")
            if key == "targets" and any(x <= 0 for x in seq):
                raise _bad(key, dict(given), f"{name!r}: targets must be > 0")
    if set(out["targets"]) != set(out["exponents"]):
        raise _bad("exponents", out["exponents"], "must name the same objectives as targets")
    reward = out["reward"] or ("product" if out["targets"] else "pareto")
    if reward not in REWARDS:
        raise _bad("reward", reward, f"allowed: {', '.join(REWARDS)}")
    out["reward"] = reward
    for name, _ in objectives:
        if name != acc and name not in COSTS:
            raise ValueError(
                f"objectives: {name!r} cannot be scored on the supernet by tnd's supernet mode "
                f"(allowed besides the accuracy: {', '.join(COSTS)})"
            )
    final = out["final"] if out["final"] is not None else num_samples
    if isinstance(final, bool) or not isinstance(final, int) or final < 1:
        raise _bad("final", out["final"], "must be an integer >= 1")
    out["final"] = int(final)
    out["arch_betas"] = [float(x) for x in b]
    return out


class TNDStage:
    """One TND stage; see the module docstring.

    Args:
        evaluator: a :class:`~paretune.objectives.train.TrainEvaluator` (the retraining
            evaluator): its data, network settings, device, threads and meters are used.
        stage: the stage number (0-based).
        edge_options: allowed operation indices per supernet edge (``None``: all the space's).
        params: :func:`check_params`' output.
        objectives: ``(name, direction)`` pairs.
        seed: seeds the weights, the batch order and the sampling (offset by the stage).
    """

    def __init__(
        self,
        evaluator: Any,
        stage: int,
        edge_options: Sequence[Sequence[int]] | None,
        params: Mapping[str, Any],
        objectives: Sequence[tuple[str, str]],
        seed: int = 0,
    ) -> None:
        self.ev = evaluator
        self.space: SearchSpace = evaluator.space
        self.stage = int(stage)
        self.p = dict(params)
        self.objectives = [(str(n), str(d)) for n, d in objectives]
        self.seed = int(seed) + 1000 * self.stage
        self.num_stages = len(self.p["keep"]) - 1
        self.device = evaluator.device
        data = self.ev.data()
        self.net_settings = dict(self.ev.build_kwargs(data))
        extra = int(self.p["add_cells"][self.stage])
        if "cells_per_stage" in self.net_settings:
            self.net_settings["cells_per_stage"] += extra
        elif "layers" in self.net_settings:
            self.net_settings["layers"] += 3 * extra
        torch.manual_seed(self.seed)
        self.net: CellSupernet = build_supernet(self.space, edge_options, **self.net_settings)
        self.net.to(self.device)
        self.rng = np.random.default_rng(self.seed)
        self.policy = EdgePolicy(
            self.net.edge_options,
            len(self.net.ops),
            rng=self.rng,
            lr=self.p["arch_lr"],
            betas=self.p["arch_betas"],
            weight_decay=self.p["arch_weight_decay"],
            clip_norm=self.p["arch_clip"],
            baseline_decay=self.p["baseline_decay"],
            init_std=self.p["init_std"],
        )
        self.optimizer = torch.optim.SGD(
            self.net.parameters(),
            lr=self.p["lr"],
            momentum=self.p["momentum"],
            weight_decay=self.p["weight_decay"],
        )
        # As the authors: cosine over the stage's epochs, stepped once per epoch.
        self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=self.p["epochs"]
        )
        self.generator = torch.Generator().manual_seed(self.seed)
        self.epoch = 0
        self.train_samples = 0  # images through weight steps (forward + backward)
        self.eval_samples = 0  # images through policy-step scoring (forward only)
        self.history: list[dict[str, Any]] = []
        self.cost_cache: dict[str, dict[str, float]] = {}
        self.window: list[list[float]] = []  # recent sample rows (pareto reward)
        self.result: dict[str, Any] | None = None

    # ------------------------------------------------------------------ helpers
    @property
    def done(self) -> bool:
        return self.epoch >= self.p["epochs"]

    def _edge_weights(self) -> list[torch.Tensor | None]:
        probs = self.policy.probabilities()
        return [
            torch.tensor(probs[e], dtype=torch.float32, device=self.device) if opts else None
            for e, opts in enumerate(self.net.edge_options)
        ]

    def costs(self, arch: Arch) -> dict[str, float]:
        """The cost objectives of ``arch``, measured once on its compact stand-alone network
        (the network the evaluator retrains; same structure as :meth:`CellSupernet.extract`)."""
        key = self.space.encode(arch)
        if key in self.cost_cache:
            return self.cost_cache[key]
        from paretune.objectives.measure import count_energy_inputs, count_params

        names = {n for n, _ in self.objectives if n in COSTS}
        data = self.ev.data()
        model = self.ev.build(arch, data).to(self.device)
        shape = (1, data.in_channels, data.input_size, data.input_size)
        out: dict[str, float] = {}
        if "params" in names:
            out["params"] = count_params(model)
        counts = count_energy_inputs(model, shape) if names & {"flops", "energy"} else None
        if "flops" in names and counts is not None:
            out["flops"] = counts.macs_m
        if names & {"latency", "latency_batch"}:
            lat, _ = self.ev._latencies(model, data)
            out.update({k: v for k, v in lat.items() if k in names})
        if names & {"energy", "energy_dynamic"}:
            from paretune.objectives.measure import count_energy_inputs as _cei
            from paretune.objectives.train_measure import inference_energy

            counts = counts or _cei(model, shape)
            energies, _, _ = inference_energy(self.ev, model, data, counts)
            out.update({k: v for k, v in energies.items() if k in names})
        self.cost_cache[key] = out
        return out

    def _row(self, values: Mapping[str, float]) -> list[float]:
        return [(-1.0 if d == "max" else 1.0) * float(values[n]) for n, d in self.objectives]

    # ------------------------------------------------------------------ policy step
    def policy_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """``M`` paths from the policy scored on one validation batch, one REINFORCE step."""
        m = self.p["samples"]
        paths, values = [], []
        self.net.train()  # the authors score in training mode: batch statistics
        with torch.no_grad():
            for _ in range(m):
                path = self.net.sample_path(self.rng, self.policy.logits)
                out = self.net(x, path=path)
                acc = 100.0 * float((out.argmax(1) == y).float().mean())
                arch = self.net.arch_of(path)
                paths.append(path)
                values.append({self.p["accuracy"]: acc, **self.costs(arch)})
                self.eval_samples += len(y)
        if self.p["reward"] == "product":
            targets = {k: stage_value(v, self.stage) for k, v in self.p["targets"].items()}
            exps = {k: stage_value(v, self.stage) for k, v in self.p["exponents"].items()}
            rewards = [product_reward(v, self.p["accuracy"], targets, exps) for v in values]
        else:
            rows = np.array([self._row(v) for v in values])
            ref = np.array(self.window, dtype=float).reshape(-1, rows.shape[1])
            rewards = pareto_rewards(rows, ref).tolist()
            self.window.extend(rows.tolist())
            self.window = self.window[-int(self.p["pareto_window"]) :]
        stats = self.policy.step(paths, rewards)
        stats["mean_sample_accuracy"] = float(np.mean([v[self.p["accuracy"]] for v in values]))
        return stats

    # ------------------------------------------------------------------ training
    def train_epoch(self) -> dict[str, Any]:
        """One epoch of weight steps (and policy steps after the warm-up); shrinks at the end."""
        if self.done:
            raise ValueError(f"stage {self.stage} has trained all its {self.p['epochs']} epochs")
        threads = getattr(self.ev, "threads", None)
        before = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(int(threads))
        try:
            return self._train_epoch()
        finally:
            torch.set_num_threads(before)

    def _train_epoch(self) -> dict[str, Any]:
        data = self.ev.data()
        train, valid, dev = data.train, data.valid, self.device
        bs, vbs = self.p["batch_size"], min(self.p["val_batch_size"], len(valid))
        order = torch.randperm(len(train), generator=self.generator)
        rl = self.epoch >= self.p["warmup"]
        loss_fn = nn.CrossEntropyLoss()
        total = correct = seen = 0.0
        steps: list[dict[str, float]] = []
        started = time.perf_counter()
        for step, i in enumerate(range(0, len(train), bs)):
            idx = order[i : i + bs]
            if len(idx) < 2:
                continue
            if rl and step % self.p["rl_interval"] == 0:
                vidx = torch.randperm(len(valid), generator=self.generator)[:vbs]
                steps.append(self.policy_step(valid.x[vidx].to(dev), valid.y[vidx].to(dev)))
            self.net.train()
            x, y = train.x[idx].to(dev), train.y[idx].to(dev)
            self.optimizer.zero_grad(set_to_none=True)
            if self.p["weight_step"] == "weighted":
                out = self.net(x, weights=self._edge_weights())
            else:
                out = self.net(x, path=self.net.sample_path(self.rng, self.policy.logits))
            loss = loss_fn(out, y)
            loss.backward()
            if self.p["grad_clip"] > 0:
                nn.utils.clip_grad_norm_(self.net.parameters(), self.p["grad_clip"])
            self.optimizer.step()
            total += float(loss.detach()) * len(idx)
            correct += float((out.detach().argmax(1) == y).sum())
            seen += len(idx)
        self.schedule.step()
        self.train_samples += int(seen)
        self.epoch += 1
        metrics: dict[str, Any] = {
            "stage": self.stage,
            "epoch": self.epoch,
            "train_loss": total / max(seen, 1),
            "train_accuracy": 100.0 * correct / max(seen, 1),
            "policy_steps": self.policy.steps,
            "train_samples": self.train_samples,
            "eval_samples": self.eval_samples,
            "measured_archs": len(self.cost_cache),
            "epoch_time_s": time.perf_counter() - started,
        }
        if steps:
            metrics["mean_reward"] = float(np.mean([s["mean_reward"] for s in steps]))
            metrics["baseline"] = steps[-1]["baseline"]
            metrics["mean_sample_accuracy"] = float(
                np.mean([s["mean_sample_accuracy"] for s in steps])
            )
        self.history.append(metrics)
        if self.done:
            self.result = self._finish()
        return metrics

    def train(self, on_epoch: Callable[[dict[str, Any], TNDStage], None] | None = None) -> dict:
        """Train the remaining epochs (calling ``on_epoch`` after each); returns the result."""
        while not self.done:
            metrics = self.train_epoch()
            if on_epoch is not None:
                on_epoch(metrics, self)
        assert self.result is not None
        return self.result

    # ------------------------------------------------------------------ the stage's end
    def _finish(self) -> dict[str, Any]:
        last = self.stage == self.num_stages - 1
        ops = list(self.net.ops)
        none = ops.index("none") if ("none" in ops and self.p["no_zero_last"] and last) else None
        kept = self.policy.shrink(self.p["keep"][self.stage + 1], drop_first=none)
        probs = self.policy.probabilities()
        out: dict[str, Any] = {
            "stage": self.stage,
            "edge_options": kept,
            "probabilities": {
                self.net.edge_names[e]: {ops[k]: float(probs[e, k]) for k in opts}
                for e, opts in enumerate(self.net.edge_options)
            },
            "dropped": {
                self.net.edge_names[e]: [ops[k] for k in opts if k not in kept[e]]
                for e, opts in enumerate(self.net.edge_options)
            },
            "train_samples": self.train_samples,
            "eval_samples": self.eval_samples,
            "policy_steps": self.policy.steps,
            "measured_archs": len(self.cost_cache),
        }
        if last:
            out["final"] = [list(a) for a in self.final_archs(self.p["final"], none)]
        return out

    def final_archs(self, k: int, skip: int | None) -> list[Arch]:
        """The ``k`` most probable architectures of this stage's distribution (argmax first).

        NB201: exact (every edge independent). DARTS: the distinct architectures of 2,000
        policy samples (input pairs uniform, as sampled), by probability."""
        out: list[Arch] = []
        if self.space.name == "nb201":
            for path in self.policy.top_paths(k, skip=skip):
                arch = self.net.arch_of(path)
                if arch not in out:
                    out.append(arch)
            return out
        scored: dict[Arch, float] = {}
        for _ in range(2000):
            path = self.net.sample_path(self.rng, self.policy.logits)
            if skip is not None and any(p == skip for p in path):
                continue
            scored[self.net.arch_of(path)] = self.policy.log_prob(path)
        return [a for a, _ in sorted(scored.items(), key=lambda t: -t[1])][:k]

    # ------------------------------------------------------------------ checkpoints
    def save(self, folder: str | Path) -> Path:
        """Write this stage's checkpoint to ``folder``; returns the JSON's path."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        state = {
            "model": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "generator": self.generator.get_state(),
        }
        torch.save(state, out / f".{STAGE_PT}.tmp")
        (out / f".{STAGE_PT}.tmp").replace(out / STAGE_PT)
        meta = {
            "format": FORMAT,
            "stage": self.stage,
            "epoch": self.epoch,
            "edge_options": self.net.edge_options,
            "net": self.net_settings,
            "params": self.p,
            "policy": self.policy.state_dict(),
            "rng": self.rng.bit_generator.state,
            "train_samples": self.train_samples,
            "eval_samples": self.eval_samples,
            "history": self.history,
            "cost_cache": self.cost_cache,
            "window": self.window,
            "result": self.result,
        }
        (out / f".{STAGE_JSON}.tmp").write_text(json.dumps(meta))
        (out / f".{STAGE_JSON}.tmp").replace(out / STAGE_JSON)
        return out / STAGE_JSON

    def load(self, folder: str | Path) -> None:
        """Continue from a checkpoint written by :meth:`save` for the same stage."""
        meta = read_stage_json(folder)
        if meta["stage"] != self.stage or meta["edge_options"] != self.net.edge_options:
            raise ValueError(
                f"stage checkpoint {str(folder)!r} is for stage {meta['stage']} with other "
                "options, not this stage"
            )
        state = torch.load(Path(folder) / STAGE_PT, map_location="cpu", weights_only=True)
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.generator.set_state(state["generator"])
        self.policy = EdgePolicy.from_state(meta["policy"])
        self.rng.bit_generator.state = meta["rng"]
        self.epoch = int(meta["epoch"])
        self.train_samples = int(meta["train_samples"])
        self.eval_samples = int(meta["eval_samples"])
        self.history = list(meta["history"])
        self.cost_cache = dict(meta["cost_cache"])
        self.window = list(meta["window"])
        self.result = meta["result"]


def read_stage_json(folder: str | Path) -> dict[str, Any]:
    """The sidecar of a stage checkpoint, or ``ValueError`` naming the folder."""
    path = Path(folder) / STAGE_JSON
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"TND stage checkpoint {str(path)!r} is unreadable: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"TND stage checkpoint {str(path)!r}: not format {FORMAT}")
    return meta


__all__ = ["DEFAULTS", "TNDStage", "check_params", "default_keep", "read_stage_json"]
