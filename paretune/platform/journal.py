"""The trial journal: every finished trial, appended and flushed the moment Ray reports it.

Ray saves the experiment state (and the searcher's) every few seconds, so a driver killed in
between forgets the trials that finished since the last save and would run them again. The
journal closes that window: on resume, a trial found in the journal is not evaluated again; its
recorded result (or error) is replayed, so the searcher is told the same thing and no work is
repeated. ``paretune sync-mlflow`` also rebuilds MLflow runs from it.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

JOURNAL_FILE = "paretune-trials.jsonl"


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


class TrialJournal:
    """An append-only JSON-lines file of finished trials (one line per trial, fsynced)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def append(
        self,
        trial_id: str,
        status: str,
        result: dict[str, Any] | None,
        error: str | None,
        config: dict[str, Any],
    ) -> None:
        record = {
            "trial_id": trial_id,
            "status": status,
            "result": _json_safe(result or {}),
            "error": error,
            "config": _json_safe(config),
            "time": time.time(),
        }
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def load(self) -> dict[str, dict[str, Any]]:
        """``{trial id: last record}``; a torn last line (a kill mid-write) is ignored."""
        records: dict[str, dict[str, Any]] = {}
        if not self.path.is_file():
            return records
        with open(self.path) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                records[record["trial_id"]] = record
        return records


class JournalCallback(Callback):
    """Ray Tune callback that appends each finished or failed trial to the journal."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.journal = TrialJournal(path)
        self._done: set[str] = set()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id not in self._done:
            self._done.add(trial.trial_id)
            self.journal.append(trial.trial_id, "ok", trial.last_result, None, trial.config)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id not in self._done:
            from paretune.platform.tracking import error_text

            self._done.add(trial.trial_id)
            self.journal.append(
                trial.trial_id, "failed", trial.last_result, error_text(trial), trial.config
            )
