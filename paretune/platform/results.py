"""The report of an experiment, assembled from paretune's own files only.

The trial journal (``paretune-trials.jsonl``) is the record of finished trials: a trial is in
the report when the journal has it, with the values it recorded, whatever Ray's last snapshot
said (a killed driver's snapshot shows trials as RUNNING that the journal has as ``ok``).
Nothing here reads Ray's experiment state, which Ray may have pickled: ``paretune report``
on a folder someone handed over runs no code from it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from paretune.platform import artifacts
from paretune.platform.config import OPTUNA_ALGORITHMS
from paretune.platform.experiment import segment_dirs
from paretune.platform.journal import JOURNAL_FILE, TrialJournal, from_json_safe
from paretune.platform.prepare import Prepared, make_searcher
from paretune.platform.report import SearchReport, TrialRow, build_report
from paretune.platform.trainable import arch_from_config

logger = logging.getLogger(__name__)


class SearchFailed(RuntimeError):
    """Every trial of a search failed; the message gives the most common reasons."""


def journal_rows(prepared: Prepared, experiment_dir: Path) -> list[TrialRow]:
    """One report row per trial in the journal, numbered in the order trials were created."""
    space, objectives = prepared.space, prepared.objectives
    records = TrialJournal(experiment_dir / JOURNAL_FILE).load()
    rows = []
    for position, (trial_id, record) in enumerate(records.items(), start=1):
        metrics = {k: from_json_safe(v) for k, v in (record.get("result") or {}).items()}
        config = record.get("config") or metrics.get("config") or {}
        values = {n: metrics.get(n) for n in objectives.names}
        ok = record.get("status") == "ok" and objectives.is_valid(values)
        error = None
        if record.get("status") != "ok":
            text = str(record.get("error") or "").strip()
            error = text.splitlines()[-1] if text else "failed"
        elif not ok:
            error = "missing or non-finite objective values"
        try:
            arch = space.encode(arch_from_config(space, config))
        except Exception as exc:  # noqa: BLE001 - a row is still worth reporting
            arch = f"<unreadable: {exc}>"
        number = record.get("number")
        rows.append(
            TrialRow(
                trial_id=trial_id,
                number=number if isinstance(number, int) else -position,
                arch=arch,
                values={k: float(v) for k, v in values.items() if ok},
                ok=ok,
                error=error,
                extras={
                    k: v
                    for k, v in metrics.items()
                    if k.startswith("test_") or k.startswith("source/")
                },
            )
        )
    # Numbers 1..N in creation order. Ray's creation index is the order within a segment, but
    # after a resume Ray counts again from what its snapshot knew, so a trial created after
    # the snapshot and one created after the resume can share an index: ties go in the
    # journal's order. Trials recorded without a number (by an older paretune) come last.
    position = {r.trial_id: i for i, r in enumerate(rows)}
    rows.sort(key=lambda r: (r.number < 0, r.number if r.number >= 0 else 0, position[r.trial_id]))
    for i, row in enumerate(rows, start=1):
        row.number = i
    return rows


def search_report(prepared: Prepared, experiment_dir: Path) -> SearchReport:
    """The report of every trial the journal records (see the module doc)."""
    return build_report(journal_rows(prepared, experiment_dir), prepared.objectives)


def write_searcher_inspection(prepared: Prepared, experiment_dir: Path) -> list[Path]:
    """Write the engine's inspection tables (e.g. the motif table) from its last saved state.

    Files go to ``<experiment_dir>/searcher/`` as CSV and heat-map PNG; the parent run gets them
    under ``searcher/``. Optuna searchers have none. A failure here is logged, never raised: the
    search itself is done.
    """
    if prepared.config.search.algorithm in OPTUNA_ALGORITHMS:
        return []
    try:
        state = artifacts.searcher_state_from_dir(segment_dirs(experiment_dir)[-1])
        if state is None:
            return []
        searcher = make_searcher(prepared)
        searcher.set_state(state)
        return artifacts.write_inspection_tables(
            searcher.engine.inspection_tables(), experiment_dir / artifacts.SEARCHER_ARTIFACTS
        )
    except Exception as exc:  # noqa: BLE001 - inspection files are extras
        logger.warning("searcher inspection tables not written: %s", exc)
        return []


def failure_summary(rep: SearchReport, experiment_dir: Path) -> str:
    """``all N trials failed`` with the most common reasons."""
    counts: dict[str, int] = {}
    for r in rep.rows:
        # Group alike errors: the architecture in a message differs from trial to trial.
        reason = re.sub(r"\|[^\s;]*\|", "<arch>", r.error or "unknown")
        counts[reason] = counts.get(reason, 0) + 1
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:3]
    reasons = "; ".join(f"{n} x {reason}" for reason, n in top)
    return f"all {len(rep.rows)} trials failed ({reasons}); details in {experiment_dir}"
