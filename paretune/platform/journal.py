"""The trial journal: every finished trial, appended and flushed the moment Ray reports it.

Ray saves the experiment state (and the searcher's) every few seconds, so a driver killed in
between forgets the trials that finished since the last save and would run them again. The
journal closes that window: on resume, a trial found in the journal is not evaluated again; its
recorded result (or error) is replayed, so the searcher is told the same thing and no work is
repeated, and no second line is written for it. The journal is the record of finished trials:
``paretune report`` and ``paretune sync-mlflow`` read it (never Ray's experiment state).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from paretune.platform.tracking import error_text

JOURNAL_FILE = "paretune-trials.jsonl"

logger = logging.getLogger(__name__)


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


def from_json_safe(value: Any) -> Any:
    """Undo the journal's JSON-safe spelling of non-finite floats."""
    if value in ("nan", "inf", "-inf"):
        return float(value)
    return value


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file, in order; a line that is not one is skipped
    with a warning naming the file and the line (a kill mid-write tears the last line)."""
    out: list[dict[str, Any]] = []
    if not path.is_file():
        return out
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                record = None
                reason = exc.msg
            else:
                reason = "not a JSON object"
            if isinstance(record, dict):
                out.append(record)
            else:
                logger.warning("%s line %d: cannot be read (%s); skipped", path, number, reason)
    return out


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
        *,
        number: int | None = None,
        segment: int | None = None,
    ) -> None:
        record = {
            "trial_id": trial_id,
            "status": status,
            "result": _json_safe(result or {}),
            "error": error,
            "config": _json_safe(config),
            "time": time.time(),
        }
        if number is not None:
            record["number"] = number
        if segment is not None:
            record["segment"] = segment
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def load(self) -> dict[str, dict[str, Any]]:
        """``{trial id: last record}``; unreadable lines are skipped with a warning."""
        return {
            str(r["trial_id"]): r
            for r in read_jsonl(self.path)
            if "trial_id" in r and isinstance(r.get("result", {}), dict)
        }


class JournalCallback(Callback):
    """Ray Tune callback that appends each finished or failed trial to the journal.

    A trial the journal has already (a trial replayed on resume) gets no second line.
    ``first_number``: trials created before this segment; a trial's number is that plus
    its creation index in the segment (none when Ray's tag has none: the report then numbers
    it after the others).
    """

    def __init__(self, path: str | os.PathLike, segment: int = 0, first_number: int = 0) -> None:
        self.journal = TrialJournal(path)
        self.segment = segment
        self.first_number = first_number
        self._done: set[str] | None = None

    def __getstate__(self) -> dict[str, Any]:  # pickled with the tuner
        return {k: v for k, v in self.__dict__.items() if k != "_done"} | {"_done": None}

    def _recorded(self) -> set[str]:
        if self._done is None:  # read once per driver: after a resume it holds earlier trials
            self._done = set(self.journal.load())
        return self._done

    def _append(self, trial: Any, status: str, error: str | None) -> None:
        done = self._recorded()
        if trial.trial_id in done:
            return
        done.add(trial.trial_id)
        self.journal.append(
            trial.trial_id,
            status,
            trial.last_result,
            error,
            trial.config,
            number=self._number(trial),
            segment=self.segment,
        )

    def _number(self, trial: Any) -> int | None:
        """``first_number`` plus Ray's creation index of the trial in its segment (the head
        of its experiment tag, ``"3_arch=..."``, from 1)."""
        head = str(getattr(trial, "experiment_tag", "")).split("_", 1)[0]
        return self.first_number + int(head) if head.isdigit() else None

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._append(trial, "ok", None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._append(trial, "failed", error_text(trial))
