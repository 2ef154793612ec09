"""The ``nas_lid`` phase: NAS-LID's few-shot split of the one-shot supernet (He et al., 2023).

A config with ``evaluator.kind: supernet`` and ``evaluator.split`` runs it instead of the plain
``supernet_training`` phase:

1. the root supernet is trained as ``supernet_training`` does (its Ray Tune trial, checkpoints
   under ``<experiment>/phases/supernet_training/``), for ``evaluator.epochs``;
2. each level (``parts = 2 ** levels``): every current sub-supernet is split in two. For each edge
   not split before, ``repeats`` training batches of ``batch_size``; per batch one random single
   path fixes the other edges, each option of the edge runs a no-grad forward, and the LID (MLE,
   ``k`` neighbours) of every layer output (``net.cells``: cells and reduction blocks) gives the
   option's profile; options are compared by cosine similarity (mean over the batches) and
   partitioned (``partition``: spectral or mincut); the edge with the best partition score is
   split (:mod:`paretune.search_algos.lid_split`). The split runs in the driver (forward passes
   only, seconds) and is recorded in ``phases/nas_lid/split-L-I.json``;
3. the children are fine-tuned for ``finetune_epochs`` each, from their parent's weights, as the
   trials of one Ray Tune run per level (``phases/nas_lid/level-L``: in parallel on a cluster,
   a checkpoint per epoch, resumable);
4. the hand-over: the evaluator gets ``leaves`` (checkpoint and ``edge_options`` of each leaf);
   every one-shot trial scores its architecture with the leaf that holds it.

Idempotent: ``paretune resume`` re-reads the records and the Tune runs' checkpoints.
MLflow: the split records and each leaf's last training metrics on the parent run
(``nas_lid/*.json`` artifacts, ``nas_lid_*`` metrics).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray import tune

from paretune.objectives.data import load_dataset
from paretune.objectives.lid import edge_similarity
from paretune.objectives.supernet_train import SupernetTrainer, load_supernet, read_checkpoint
from paretune.platform.config import ConfigError, ExperimentConfig
from paretune.platform.phase_trials import (
    fit_trials,
    parent_run_id,
    restore_from_tune,
    train_reporting,
    trial_settings,
    write_record,
)
from paretune.platform.prepare import Prepared
from paretune.platform.supernet_phase import PHASES_DIR, SupernetTrainingPhase
from paretune.search_algos.lid_split import METHODS, children, choose_split, splittable_edges

PHASE_NAME = "nas_lid"
HANDOVER_FILE = "handover.json"
SPLIT_DEFAULTS: dict[str, Any] = {
    "method": "lid",  # the split criterion (the paper's)
    "parts": 2,  # leaves in the end: a power of 2 (each level splits every sub-supernet in 2)
    "partition": "spectral",  # spectral | mincut
    "repeats": 5,  # R batches per edge (the authors: 50)
    "batch_size": 128,  # per batch (the authors: 128)
    "k": 20,  # neighbours of the LID estimator
    "finetune_epochs": 5,  # per level, each child from its parent's weights
}


def check_split(split: Mapping[str, Any] | None) -> dict[str, Any]:
    """``evaluator.split`` with its defaults, or ``ConfigError`` naming the field."""
    given = dict(split or {})
    unknown = sorted(set(given) - set(SPLIT_DEFAULTS))
    if unknown:
        raise ConfigError(
            f"evaluator.split.{unknown[0]} = {given[unknown[0]]!r}: unknown "
            f"(allowed: {', '.join(SPLIT_DEFAULTS)})"
        )
    out = {**SPLIT_DEFAULTS, **given}
    if out["method"] != "lid":
        raise ConfigError(f"evaluator.split.method = {out['method']!r}: allowed: lid")
    if out["partition"] not in METHODS:
        raise ConfigError(
            f"evaluator.split.partition = {out['partition']!r}: allowed: {', '.join(METHODS)}"
        )
    for key, low in (("parts", 2), ("repeats", 1), ("batch_size", 0), ("k", 2)):
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ConfigError(f"evaluator.split.{key} = {v!r}: must be an integer >= {low}")
    if out["parts"] & (out["parts"] - 1):
        raise ConfigError(f"evaluator.split.parts = {out['parts']!r}: must be a power of 2")
    if out["batch_size"] <= out["k"]:
        raise ConfigError(
            f"evaluator.split.batch_size = {out['batch_size']!r}: must exceed k = {out['k']}"
        )
    v = out["finetune_epochs"]
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ConfigError(f"evaluator.split.finetune_epochs = {v!r}: must be an integer >= 1")
    return out


# ---------------------------------------------------------------------- without Ray
def split_supernet(
    checkpoint: str | Path,
    root_options: list[list[int]],
    split: Mapping[str, Any],
    *,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, Any]:
    """NAS-LID's split of the supernet in ``checkpoint``: the chosen edge, its groups, the
    children's ``edge_options``, every candidate edge's score and similarity matrix."""
    net, meta = load_supernet(checkpoint, device)
    s = meta["settings"]
    data = load_dataset(
        s["dataset"],
        path=s.get("data_path"),
        val_fraction=s["val_fraction"],
        test_fraction=s["test_fraction"],
        seed=s["seed"],
    )
    g = torch.Generator().manual_seed(seed)
    size = min(int(split["batch_size"]), len(data.train))
    batches = [
        data.train.x[torch.randperm(len(data.train), generator=g)[:size]].to(device)
        for _ in range(int(split["repeats"]))
    ]
    rng = np.random.default_rng(seed)
    sims: dict[int, tuple[list[int], np.ndarray]] = {}
    started = time.perf_counter()
    for e in splittable_edges(net.edge_options, root_options, 2):
        options, sim, _ = edge_similarity(net, e, batches, rng, int(split["k"]))
        sims[e] = (options, sim)
    record = choose_split(sims, split["partition"], 2, seed)
    record["edge_name"] = net.edge_names[record["edge"]]
    record["children"] = children(net.edge_options, record["edge"], record["groups"])
    record["similarity"] = {str(e): np.round(v[1], 6).tolist() for e, v in sims.items()}
    record["parent"] = str(checkpoint)
    record["parent_edge_options"] = net.edge_options
    record["seconds"] = time.perf_counter() - started
    return record


def inherit(trainer: SupernetTrainer, parent_checkpoint: str | Path) -> int:
    """Copy the parent's weights into the child's network (the child holds a subset of its
    modules); returns the number of tensors copied."""
    _, state = read_checkpoint(parent_checkpoint, map_location="cpu")
    own = trainer.net.state_dict()
    shared = {k: v for k, v in state["model"].items() if k in own}
    own.update(shared)
    trainer.net.load_state_dict(own)
    return len(shared)


# ---------------------------------------------------------------------- Ray trial
def finetune_trial(
    config: dict[str, Any], *, trainer_settings: dict[str, Any], jobs: list[dict[str, Any]]
) -> None:
    """Ray Tune trainable: fine-tune the child ``jobs[config["child"]]`` (its ``edge_options``,
    from ``parent``'s weights), one report and checkpoint per epoch; resumes from Ray's."""
    job = jobs[int(config["child"])]
    trainer = SupernetTrainer(**trial_settings(trainer_settings), edge_options=job["edge_options"])
    if not restore_from_tune(trainer):
        inherit(trainer, job["parent"])
    train_reporting(trainer, lambda t: {"child": int(config["child"]), "supernet_done": t.done})


class NasLidPhase:
    """Root supernet, LID splits level by level, children fine-tuned as Tune trials."""

    name = PHASE_NAME

    def __init__(self, config: ExperimentConfig) -> None:
        self.config = config
        self.split = check_split(getattr(config.evaluator, "split", None))
        if getattr(config.evaluator, "sampling", "uniform") != "uniform":
            raise ConfigError(
                "evaluator.sampling = 'weighted' with evaluator.split: NAS-LID trains "
                "single paths (allowed: uniform)"
            )
        self.root = SupernetTrainingPhase(config)

    def run(
        self,
        prepared: Prepared,
        searcher: Any,
        experiment_dir: Path,
        state: dict[str, Any],
        *,
        verbose: int = 1,
    ) -> tuple[Prepared, Any]:
        prepared, searcher = self.root.run(
            prepared, searcher, experiment_dir, state, verbose=verbose
        )
        root_ckpt = prepared.evaluator_settings["checkpoint"]
        phase_dir = Path(experiment_dir) / PHASES_DIR / self.name
        handover_path = phase_dir / HANDOVER_FILE
        if handover_path.is_file():
            return self._handover(prepared, json.loads(handover_path.read_text())), searcher
        root_options = load_supernet(root_ckpt)[0].edge_options
        leaves = [{"checkpoint": root_ckpt, "edge_options": root_options}]
        records: list[dict[str, Any]] = []
        levels = int(math.log2(self.split["parts"]))
        settings = self.root.trainer_settings(prepared)
        settings["epochs"] = int(self.split["finetune_epochs"])
        device = "cuda" if settings.get("device") != "cpu" and torch.cuda.is_available() else "cpu"
        for level in range(levels):
            jobs: list[dict[str, Any]] = []
            for i, leaf in enumerate(leaves):
                path = phase_dir / f"split-{level}-{i}.json"
                if path.is_file():
                    record = json.loads(path.read_text())
                else:
                    if verbose:
                        print(f"[nas_lid] level {level}: splitting sub-supernet {i}")
                    record = split_supernet(
                        leaf["checkpoint"],
                        root_options,
                        self.split,
                        seed=self.config.seed + 1000 * level + i,
                        device=device,
                    )
                    write_record(path, record)
                records.append(record)
                jobs.extend(
                    {"parent": leaf["checkpoint"], "edge_options": c} for c in record["children"]
                )
            results = self._fit(jobs, settings, phase_dir, f"level-{level}", verbose)
            leaves = [
                {"checkpoint": results[c], "edge_options": jobs[c]["edge_options"]}
                for c in range(len(jobs))
            ]
        handover = {
            "root": root_ckpt,
            "leaves": leaves,
            "splits": [
                {k: r[k] for k in ("edge", "edge_name", "groups", "score", "scores", "seconds")}
                for r in records
            ],
            "split_settings": self.split,
            "finished_at": time.time(),
        }
        self._log_mlflow(state, records, handover)
        write_record(handover_path, handover)
        return self._handover(prepared, handover), searcher

    def _fit(
        self,
        jobs: list[dict[str, Any]],
        settings: dict[str, Any],
        phase_dir: Path,
        name: str,
        verbose: int,
    ) -> dict[int, str]:
        """Fine-tune ``jobs`` as the trials of one Tune run; child index -> checkpoint folder."""
        grid = fit_trials(
            finetune_trial,
            storage=phase_dir,
            name=name,
            resources=self.root.resources(),
            max_failures=self.config.failure.max_failures,
            verbose=verbose,
            parameters={"trainer_settings": settings, "jobs": jobs},
            param_space={"child": tune.grid_search(list(range(len(jobs))))},
        )
        path = phase_dir / name
        out: dict[int, str] = {}
        for result in grid:
            metrics = result.metrics or {}
            if result.error is not None or result.checkpoint is None:
                raise ConfigError(
                    f"a NAS-LID fine-tuning trial failed ({type(result.error).__name__}); see "
                    f"{path}; `paretune resume` continues from its checkpoints"
                )
            if not metrics.get("supernet_done", False):
                raise ConfigError(
                    f"a NAS-LID fine-tuning trial stopped early; see {path}; "
                    "`paretune resume` continues it"
                )
            out[int(result.config["child"])] = result.checkpoint.path
        return out

    def _handover(self, prepared: Prepared, record: Mapping[str, Any]) -> Prepared:
        settings = dict(prepared.evaluator_settings)
        settings["leaves"] = list(record["leaves"])
        prepared = dataclasses.replace(prepared, evaluator_settings=settings)
        # the root phase's handover builds the evaluator from the settings (leaves included)
        return self.root.handover(prepared, settings["checkpoint"])

    def _log_mlflow(
        self, state: dict[str, Any], records: list[dict[str, Any]], handover: dict[str, Any]
    ) -> None:
        run_id = parent_run_id(self.config, state)
        if run_id is None:
            return
        from mlflow.tracking import MlflowClient

        try:
            client = MlflowClient(self.config.mlflow.tracking_uri)
            client.log_dict(run_id, {"splits": records}, "nas_lid/splits.json")
            client.log_dict(run_id, handover, "nas_lid/handover.json")
            for i, r in enumerate(records):
                client.log_metric(run_id, "nas_lid_split_score", float(r["score"]), step=i)
                client.log_metric(run_id, "nas_lid_split_edge", float(r["edge"]), step=i)
            for i, leaf in enumerate(handover["leaves"]):
                sidecar = json.loads((Path(leaf["checkpoint"]) / "supernet.json").read_text())
                last = (sidecar.get("history") or [{}])[-1]
                for k, v in last.items():
                    if isinstance(v, int | float) and k != "epoch":
                        client.log_metric(run_id, f"nas_lid_leaf{i}_{k}", float(v))
        except Exception as exc:  # noqa: BLE001 - MLflow is a view; the handover matters
            print(f"[nas_lid] MLflow logging failed: {type(exc).__name__}: {exc}")


def make_phase(config: ExperimentConfig) -> NasLidPhase:
    """The phase object (see :mod:`paretune.platform.phases`)."""
    return NasLidPhase(config)


__all__ = [
    "PHASE_NAME",
    "SPLIT_DEFAULTS",
    "NasLidPhase",
    "check_split",
    "finetune_trial",
    "inherit",
    "make_phase",
    "split_supernet",
]
