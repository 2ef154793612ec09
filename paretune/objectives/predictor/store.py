"""Saving and loading a latency predictor as an MLflow artifact (or a plain folder).

:func:`log_predictor` logs the predictor's folder (``predictor.pt`` + ``predictor.json``) as an
artifact of a run and returns its URI, ``runs:/<run_id>/<artifact_path>``. :func:`load_predictor`
takes that URI (or any artifact URI MLflow can download), or a local folder, and returns the
predictor; downloads are cached per process. MLflow is imported only here, and only when used.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

from paretune.objectives.predictor.model import LatencyPredictor

ARTIFACT_PATH = "latency_predictor"


def log_predictor(
    predictor: LatencyPredictor,
    run_id: str,
    tracking_uri: str | None = None,
    artifact_path: str = ARTIFACT_PATH,
) -> str:
    """Log ``predictor`` to the MLflow run ``run_id``; returns ``runs:/<run_id>/<artifact_path>``.

    Also sets the run's tags ``latency_predictor.devices`` and ``latency_predictor.uri``.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        folder = predictor.save(Path(tmp) / artifact_path)
        client.log_artifacts(run_id, str(folder), artifact_path)
    uri = f"runs:/{run_id}/{artifact_path}"
    client.set_tag(run_id, "latency_predictor.devices", ",".join(predictor.devices))
    client.set_tag(run_id, "latency_predictor.uri", uri)
    return uri


def is_artifact_uri(location: str) -> bool:
    """True for ``runs:/...``, ``models:/...`` and other ``scheme://`` URIs (not local paths)."""
    text = str(location)
    return text.startswith(("runs:/", "models:/")) or (
        "://" in text and not text.startswith("file://")
    )


@functools.lru_cache(maxsize=16)
def _download(uri: str, tracking_uri: str | None) -> str:
    import mlflow.artifacts

    dst = tempfile.mkdtemp(prefix="paretune-predictor-")
    return mlflow.artifacts.download_artifacts(
        artifact_uri=uri, dst_path=dst, tracking_uri=tracking_uri
    )


def load_predictor(
    location: str | os.PathLike, tracking_uri: str | None = None
) -> LatencyPredictor:
    """A predictor from a local folder, a ``file://`` URI or an MLflow artifact URI.

    Args:
        location: e.g. ``runs:/<run_id>/latency_predictor`` or ``runs/predictor``.
        tracking_uri: the MLflow tracking URI that ``runs:/`` URIs refer to (default: MLflow's
            current one, ``$MLFLOW_TRACKING_URI``).

    Raises:
        FileNotFoundError: nothing loadable there (the message names the location).
    """
    text = str(location)
    if text.startswith("file://"):
        text = text.removeprefix("file://")
    if is_artifact_uri(text):
        try:
            local = _download(text, tracking_uri)
        except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds; name the URI
            raise FileNotFoundError(
                f"latency predictor {text!r}: cannot download from MLflow "
                f"(tracking URI {tracking_uri!r}): {exc}"
            ) from None
        return LatencyPredictor.load(local)
    return LatencyPredictor.load(text)
