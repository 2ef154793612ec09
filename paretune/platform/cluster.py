"""Where trials run: the environment defaults Ray and MLflow need, starting or joining Ray,
reachability of the Ray address and the tracking server, resources and concurrency."""

from __future__ import annotations

import logging
import os
import socket
import urllib.request
from typing import Any

import ray

from paretune.platform.config import ConfigError, ExperimentConfig
from paretune.platform.redact import redact_text, redact_uri

# The environment defaults a search sets in the driver (a variable the user set is kept).
ENVIRONMENT_DEFAULTS = {
    # Intermediate (per-epoch) results carry only some objectives; Ray must not reject them.
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
    # With a tracking server MLflow prints a "View run" line per ended run: thousands of trials.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    # Fail fast and let the tracker's own queue retry, instead of MLflow's long backoff.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


def set_environment_defaults() -> None:
    """Set :data:`ENVIRONMENT_DEFAULTS` where the environment does not set them already."""
    for key, value in ENVIRONMENT_DEFAULTS.items():
        os.environ.setdefault(key, value)


def ensure_ray(config: ExperimentConfig) -> bool:
    """Join the configured cluster or start a local Ray; True when this call started it."""
    if ray.is_initialized():
        return False
    address = config.ray.address or os.environ.get("RAY_ADDRESS") or None
    field = "ray.address" if config.ray.address else "RAY_ADDRESS"
    if address is not None and address not in ("auto", "local"):
        check_reachable(address, field)
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
    if address is None:
        kwargs.update(num_cpus=config.ray.num_cpus, num_gpus=config.ray.num_gpus)
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"{field} = {address!r}: cannot connect to a Ray cluster ({exc})"
        ) from None
    return True


def check_reachable(address: str, field: str, timeout: float = 3.0) -> None:
    """Fail fast (instead of hanging) when ``host:port`` does not accept connections."""
    target = address.split("://", 1)[-1].rstrip("/")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{field} = {address!r}: expected host:port, ray://host:port or auto")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ConfigError(f"{field} = {address!r}: nothing answers there ({exc})") from None


def check_tracking_uri(config: ExperimentConfig, timeout: float = 5.0) -> None:
    """An HTTP tracking server must answer its health check before the search starts."""
    uri = config.mlflow.tracking_uri
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
            resp.read()
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"mlflow.tracking_uri = {redact_uri(uri)!r}: the tracking server does not answer "
            f"({redact_text(str(exc), uri)})"
        ) from None


def check_resources(config: ExperimentConfig) -> None:
    """Refuse a per-trial request that no node of the cluster can ever satisfy."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    res = config.resources
    need = {"CPU": res.cpu, "GPU": res.gpu, "memory": (res.memory_mb or 0) * 2**20}
    fits = [
        n for n in nodes if all(n["Resources"].get(k, 0) >= v for k, v in need.items() if v > 0)
    ]
    if not fits:
        have = [
            {
                "CPU": n["Resources"].get("CPU", 0),
                "GPU": n["Resources"].get("GPU", 0),
                "memory_mb": round(n["Resources"].get("memory", 0) / 2**20),
            }
            for n in nodes
        ]
        raise ConfigError(
            f"resources = {{cpu: {res.cpu}, gpu: {res.gpu}, memory_mb: {res.memory_mb}}}: "
            f"no node of the cluster can run one trial (nodes have {have})"
        )


def default_concurrency(config: ExperimentConfig) -> int:
    """Trials the cluster can run at once with the per-trial resources.

    Ray lets a custom searcher keep only one trial pending unless a concurrency limit is set,
    which would leave the cluster idle between trials; this is that limit.
    """
    total = ray.cluster_resources()
    res = config.resources
    limits = [total.get("CPU", 1) / res.cpu]
    if res.gpu > 0:
        limits.append(total.get("GPU", 0) / res.gpu)
    return max(1, int(min(limits)))
