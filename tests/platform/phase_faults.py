"""``python tests/platform/phase_faults.py FAULT ARG paretune-args...``: the ``paretune`` command
with a weight-sharing phase's trials wrapped so that one fails once (the resume tests).
Production code has no fault injection: this driver replaces the phase's trainable before the
command runs. ``FAULT ARG``:

- ``pertnas-job KEY``: PertNAS supernet mode's job ``KEY`` raises the first time it runs
  (wraps :func:`paretune.platform.pertnas_supernet.job_trainable`);
- ``tnd-epoch N``: a TND stage trial not restored from a checkpoint raises after its
  checkpoint of epoch ``N`` (wraps :func:`paretune.platform.tnd_supernet.stage_trainable`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ray import cloudpickle, tune  # noqa: E402

from paretune.platform import pertnas_supernet, tnd_supernet  # noqa: E402

real_job_trainable = pertnas_supernet.job_trainable
real_stage_trainable = tnd_supernet.stage_trainable
FAILED_MARKER = ".failed_once"  # in the phase's folder: the fault already happened


def failing(key: str):
    """A job trainable whose job ``key`` raises the first time it runs (once per phase)."""

    def job_trainable(cfg: dict[str, Any]) -> None:
        c = cfg["pertnas"]
        root = Path(c["root"])
        done = (root / "results" / f"{key}.json").is_file()
        if c["job"]["key"] == key and not done and not (root / FAILED_MARKER).exists():
            (root / FAILED_MARKER).write_text(key)
            raise RuntimeError(f"job {key} failed on purpose (test fault)")
        real_job_trainable(cfg)

    return job_trainable


def failing_after(epoch: int):
    """A stage trainable that, when not restored, raises after its report of ``epoch`` (before
    training the next epoch)."""

    def stage_trainable(cfg: dict[str, Any]) -> None:
        if tune.get_checkpoint() is not None:
            return real_stage_trainable(cfg)
        from paretune.objectives.tnd_stage import TNDStage

        real_train_epoch = TNDStage.train_epoch

        def train_epoch(stage: Any) -> Any:
            if stage.epoch == epoch:
                raise RuntimeError(f"stage trial stopped after epoch {epoch} (test fault)")
            return real_train_epoch(stage)

        TNDStage.train_epoch = train_epoch  # in this trial's worker only
        try:
            real_stage_trainable(cfg)
        finally:
            TNDStage.train_epoch = real_train_epoch

    return stage_trainable


# Ray's workers need not find this test module on their path: send it by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

if __name__ == "__main__":
    from paretune.platform.cli import main

    fault, arg = sys.argv[1:3]
    if fault == "pertnas-job":
        pertnas_supernet.job_trainable = failing(arg)
    elif fault == "tnd-epoch":
        tnd_supernet.stage_trainable = failing_after(int(arg))
    else:
        sys.exit(f"phase_faults.py: FAULT = {fault!r}: must be 'pertnas-job' or 'tnd-epoch'")
    sys.exit(main(sys.argv[3:]))
