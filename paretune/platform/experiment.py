"""The experiment folder: its config file, the paretune state file and the segments' folders.

An experiment directory holds ``config.yaml`` (the validated config), ``paretune.json`` (run
name, storage, MLflow ids, segments; written atomically by :func:`write_state`), the trial
journal, the searcher's event log and one Ray Tune experiment per segment: the directory itself
and then ``segments/segment-NNN``. Nothing here imports Ray or MLflow.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from paretune.platform.config import ConfigError, ExperimentConfig, load_config

STATE_FILE = "paretune.json"
CONFIG_FILE = "config.yaml"
SEGMENTS_DIR = "segments"
TRIALS_DIR = "trials"  # each trial's own files (weights), in the experiment directory


def create_experiment_dir(config: ExperimentConfig) -> tuple[Path, dict[str, Any]]:
    """A new ``<storage>/<name>-<time>`` folder with the config; returns it and its first state."""
    run_name = f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    storage = Path(config.storage.path).expanduser().resolve()
    experiment_dir = storage / run_name
    try:
        experiment_dir.mkdir(parents=True, exist_ok=False)
    except OSError as exc:
        raise ConfigError(
            f"storage.path = {config.storage.path!r}: cannot create {experiment_dir} ({exc.strerror})"
        ) from None
    (experiment_dir / CONFIG_FILE).write_text(config.to_yaml())
    return experiment_dir, {"run_name": run_name, "storage": str(storage)}


def write_state(experiment_dir: Path, state: Mapping[str, Any]) -> None:
    """Write the paretune state file atomically (a temporary file, then a rename)."""
    tmp = experiment_dir / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(dict(state), indent=2))
    tmp.replace(experiment_dir / STATE_FILE)


def read_state(experiment_dir: Path) -> dict[str, Any]:
    """The paretune state file (empty when there is none)."""
    path = experiment_dir / STATE_FILE
    if not path.is_file():
        return {}
    try:
        state = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a paretune state file ({exc})") from None
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: not a paretune state file (not a JSON object)")
    return state


def load_experiment(experiment_dir: Path) -> tuple[ExperimentConfig, dict[str, Any]]:
    """The config and paretune state saved in an experiment directory."""
    cfg_path = experiment_dir / CONFIG_FILE
    state_path = experiment_dir / STATE_FILE
    if not cfg_path.is_file() or not state_path.is_file():
        raise ConfigError(
            f"{experiment_dir}: not a paretune experiment directory (no {CONFIG_FILE} / {STATE_FILE})"
        )
    return load_config(cfg_path), read_state(experiment_dir)


def segment_name(segment: int) -> str:
    """The folder of segment ``segment`` (> 0) relative to the experiment directory."""
    return f"{SEGMENTS_DIR}/segment-{segment:03d}"


def segment_dirs(experiment_dir: Path, state: Mapping[str, Any] | None = None) -> list[Path]:
    """The Ray Tune experiments of a search, in order (see ``search.segment_size``).

    The first is the experiment directory itself; later ones are ``segments/segment-NNN``
    inside it, listed in the paretune state file as they start.
    """
    if state is None:
        state = read_state(experiment_dir)
    return [experiment_dir, *(experiment_dir / name for name in state.get("segments", []))]


def trial_dirs(experiment_dir: Path, trial_ids: Any) -> dict[str, Path]:
    """``{trial id: folder}`` holding each trial's files (weights) in the experiment directory."""
    return {tid: experiment_dir / TRIALS_DIR / tid for tid in trial_ids}
