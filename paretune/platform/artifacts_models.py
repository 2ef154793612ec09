"""The front's trained networks as MLflow pytorch models, from the trials' saved weights."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from paretune.platform.report import TrialRow


logger = logging.getLogger("paretune.platform.artifacts")

WEIGHTS_FILE = "weights.pt"
WEIGHTS_META_FILE = "weights.json"
MODEL_NAME = "model"
# Real images in a model's input example: torch.export keeps a batch dimension of 1 static, so
# the example holds two to keep the logged model's batch size free.
EXAMPLE_BATCH = 2
MAX_TAG = 5000


# ---------------------------------------------------------------------- front models
@dataclass
class LoggedFrontModel:
    """One front architecture logged as an MLflow model."""

    trial_id: str
    run_id: str
    model_id: str
    model_uri: str
    registered_version: str | None = None


def load_trial_model(
    trial_dir: str | Path,
    build_fn: Callable[[Mapping[str, Any]], nn.Module] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """The trained network a trial saved: ``weights.json`` says how to build it, ``weights.pt``
    holds its ``state_dict``.

    ``weights.json`` holds ``arch`` (the architecture string) and ``build`` (keyword arguments
    of the space's ``build``: ``channels``, ``cells_per_stage``, ``input_size``,
    ``in_channels``, ``num_classes``), and optionally ``space`` (default ``nb201``),
    ``dataset`` and ``data_path`` (where a real input example comes from).

    Args:
        trial_dir: the trial's directory.
        build_fn: builds the untrained network from the ``weights.json`` dict; default: the
            space's ``build(decode(arch), **build)``.

    Returns:
        The network in eval mode with the trained weights, and the ``weights.json`` dict.

    Raises:
        FileNotFoundError: ``weights.pt`` or ``weights.json`` is missing.
    """
    import torch

    folder = Path(trial_dir)
    meta_path, weights_path = folder / WEIGHTS_META_FILE, folder / WEIGHTS_FILE
    for p in (meta_path, weights_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such file (the trial saved no weights)")
    meta = json.loads(meta_path.read_text())
    model = (build_fn or default_build)(meta)
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    return model, meta


def default_build(meta: Mapping[str, Any]) -> nn.Module:
    """The untrained network of a ``weights.json`` dict (see :func:`load_trial_model`)."""
    from paretune.spaces import make_space

    space = make_space(meta.get("space", "nb201"))
    return space.build(space.decode(meta["arch"]), **dict(meta.get("build", {})))


def example_input(
    dataset: str, data_path: str | None = None, *, n: int = EXAMPLE_BATCH, seed: int = 0
) -> np.ndarray:
    """``n`` real test images of ``dataset`` as a float32 array of shape (n, C, H, W)."""
    from paretune.objectives.data import load_dataset

    data = load_dataset(dataset, path=data_path, seed=seed)
    return data.test.x[:n].numpy().copy()


def log_front_models(
    tracking_uri: str,
    front: Sequence[TrialRow],
    trial_runs: Mapping[str, str],
    trial_dirs: Mapping[str, str | Path],
    *,
    register_name: str | None = None,
    build_fn: Callable[[Mapping[str, Any]], nn.Module] | None = None,
    input_example: np.ndarray | None = None,
) -> list[LoggedFrontModel]:
    """Log the trained networks of the front as MLflow pytorch models into their trial runs.

    Each network is saved in MLflow's ``pt2`` format (``torch.export``: loading needs torch,
    not paretune, and unpickles nothing) with a signature inferred from real inputs and the
    network's outputs on them, those inputs as the input example, the tags ``arch`` and
    ``trial_id``; the trial run gets the tags ``model_id`` and ``model_uri``. Front trials
    without a run or saved weights are skipped (one warning names them).

    Args:
        tracking_uri: the experiment's tracking URI.
        front: the report's front rows.
        trial_runs: ``{trial id: run id}`` of the nested runs.
        trial_dirs: ``{trial id: trial directory}`` (where ``weights.pt``/``weights.json`` are).
        register_name: also register each model as a version of this registered model.
        build_fn: see :func:`load_trial_model`.
        input_example: real inputs (N, C, H, W); default: :data:`EXAMPLE_BATCH` test images of
            the dataset named in ``weights.json``. With N = 1 the model only accepts batches
            of one (``torch.export`` specialises a size-1 dimension).

    Returns:
        The logged models, in front order.

    Raises:
        ValueError: no input example can be found for a model.
    """
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    logged: list[LoggedFrontModel] = []
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={_version('numpy')}"]
    skipped: list[str] = []
    with _tracking_uri(tracking_uri):
        for row in front:
            run_id = trial_runs.get(row.trial_id)
            folder = trial_dirs.get(row.trial_id)
            if run_id is None or folder is None:
                skipped.append(row.trial_id)
                continue
            try:
                model, meta = load_trial_model(folder, build_fn)
            except FileNotFoundError:
                skipped.append(row.trial_id)
                continue
            example = input_example
            if example is None and meta.get("dataset"):
                example = example_input(meta["dataset"], meta.get("data_path"))
            if example is None:
                raise ValueError(
                    f"front trial {row.trial_id}: no input example (pass input_example= or "
                    "write 'dataset' into weights.json)"
                )
            with torch.no_grad():
                output = model(torch.as_tensor(example)).numpy()
            signature = infer_signature(example, output)
            lm = client.create_logged_model(
                client.get_run(run_id).info.experiment_id,
                name=MODEL_NAME,
                source_run_id=run_id,
                tags={"arch": row.arch, "trial_id": row.trial_id},
                params={k: str(v) for k, v in dict(meta.get("build", {})).items()},
                model_type=f"{meta.get('space', 'nb201')}-network",
            )
            info = mlflow.pytorch.log_model(
                model,
                name=MODEL_NAME,
                run_id=run_id,
                model_id=lm.model_id,
                signature=signature,
                input_example=example,
                serialization_format="pt2",
                registered_model_name=register_name,
                pip_requirements=requirements,
                metadata={"arch": row.arch, "trial_id": row.trial_id},
            )
            version = getattr(info, "registered_model_version", None)
            uri = f"models:/{lm.model_id}"
            tags = [_tag("model_id", lm.model_id), _tag("model_uri", uri)]
            if version is not None:
                tags.append(_tag("registered_model", f"{register_name}/{version}"))
            client.log_batch(run_id, tags=tags)
            logged.append(
                LoggedFrontModel(
                    row.trial_id,
                    run_id,
                    lm.model_id,
                    uri,
                    None if version is None else str(version),
                )
            )
    if skipped:
        logger.warning(
            "no MLflow model for %d front trial(s) without a run or saved weights "
            "(%s in the trial directory): %s",
            len(skipped),
            WEIGHTS_FILE,
            ", ".join(skipped),
        )
    return logged


def _tag(key: str, value: str) -> Any:
    from mlflow.entities import RunTag

    return RunTag(key, value)


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


@contextlib.contextmanager
def _tracking_uri(uri: str) -> Iterator[None]:
    """Use ``uri`` as MLflow's global tracking URI for the block, then restore the previous one."""
    import os

    import mlflow

    env_before = os.environ.get("MLFLOW_TRACKING_URI")
    before = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)  # None unsets it (and its environment variable)
        if env_before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env_before
