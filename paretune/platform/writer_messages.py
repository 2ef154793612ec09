"""The messages between :class:`~paretune.platform.tracking.MlflowTracker` and its writer
(:mod:`paretune.platform.mlflow_writer`): typed, one dataclass per kind, pickled over a pipe
between paretune's own processes (and spooled to the driver's temporary files until written).

To the writer: :class:`Init` (first), :class:`Start`, :class:`Result`, :class:`End` (a trial's
events), :class:`Cells`, :class:`Flush`, :class:`Close`. Replies: :class:`RunsFound`,
:class:`RunMade`, :class:`TrialWritten`, :class:`Pictured`, :class:`Flushed`,
:class:`WriterWarning`, :class:`StoreProblem`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from paretune.platform.redact import redact_text

# Writes wait for up to BATCH_N trials or BATCH_S seconds (see mlflow_writer.WriterCore).
BATCH_S, BATCH_N = 2.0, 32
# MLflow's limits for one log_batch (bigger batches are split).
MAX_METRICS, MAX_PARAMS, MAX_TAGS = 1000, 100, 100


class MetricPoint(NamedTuple):
    """One metric value, as ``mlflow.entities.Metric`` takes it."""

    key: str
    value: float
    timestamp: int  # ms
    step: int


@dataclass(frozen=True)
class WriterSettings:
    """What a writer session needs to know (the first message to a writer process)."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    runs: dict[str, str] = field(default_factory=dict)  # {trial id: run id} known so far
    ended: tuple[str, ...] = ()  # trials whose runs are complete
    retry_s: float = 5.0
    batch_s: float = BATCH_S
    batch_n: int = BATCH_N
    sql_insert: bool = False  # opt-in whole-run inserts (mlflow_sql)
    experiment_dir: str | None = None  # named in the sync-mlflow hint


@dataclass(frozen=True)
class Init:
    settings: WriterSettings


@dataclass(frozen=True)
class Start:
    trial_id: str
    tags: dict[str, str]
    params: dict[str, str]
    start_ms: int | None = None  # the driver's clock; the writer's when None


@dataclass(frozen=True)
class Result:
    trial_id: str
    metrics: list[MetricPoint]


@dataclass(frozen=True)
class End:
    trial_id: str
    status: str  # FINISHED or FAILED
    tags: dict[str, str]
    end_ms: int | None = None


@dataclass(frozen=True)
class Cells:
    """Draw ``cell.png`` for these trials (``{trial id: arch}``) and log it to their runs."""

    archs: dict[str, str]


@dataclass(frozen=True)
class Flush:
    """Answered by :class:`Flushed` once everything sent before it is written."""

    token: int


@dataclass(frozen=True)
class Close:
    """Write what is queued, then end (the process exits)."""


TrialMessage = Start | Result | End
Message = Init | TrialMessage | Cells | Flush | Close


@dataclass(frozen=True)
class RunsFound:
    """The trial runs that already existed under the parent run (a resumed experiment)."""

    runs: dict[str, str]
    ended: list[str]


@dataclass(frozen=True)
class RunMade:
    trial_id: str
    run_id: str


@dataclass(frozen=True)
class TrialWritten:
    """Everything of an ended trial is written."""

    trial_id: str


@dataclass(frozen=True)
class Pictured:
    trial_ids: list[str]


@dataclass(frozen=True)
class Flushed:
    token: int


@dataclass(frozen=True)
class WriterWarning:
    text: str


@dataclass(frozen=True)
class StoreProblem:
    """The store lost what this search wrote (its experiment or parent run is gone)."""

    text: str


Reply = RunsFound | RunMade | TrialWritten | Pictured | Flushed | WriterWarning | StoreProblem


# ---------------------------------------------------------------------- failure texts
def sync_hint(experiment_dir: str | None) -> str:
    return f"run `paretune sync-mlflow {experiment_dir or '<experiment dir>'}` once it is fixed"


def failure_kind(exc: BaseException) -> str:
    """The kind of a failed write, for one warning per kind (MLflow's error code, or the type)."""
    code = getattr(exc, "error_code", None)
    return f"{type(exc).__name__}:{code}" if code else type(exc).__name__


def short_reason(exc: BaseException, uri: str, limit: int = 200) -> str:
    """The first line of an error (SQLAlchemy's go on with the statement and its parameters),
    without credentials."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return redact_text(text, uri)


def is_store_lost(exc: BaseException) -> bool:
    """An error that says the experiment, the parent run or the tables are gone."""
    code = getattr(exc, "error_code", "")
    text = str(exc).lower()
    return code == "RESOURCE_DOES_NOT_EXIST" or "no such table" in text
