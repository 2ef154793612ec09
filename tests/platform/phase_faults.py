"""``python tests/platform/pertnas_faults.py KEY paretune-args...``: the ``paretune`` command
with PertNAS supernet mode's job trials wrapped so that the job ``KEY`` fails once (the resume
test). Production code has no fault injection: this driver replaces the phase's trainable
(:func:`paretune.platform.pertnas_supernet.job_trainable`) before the command runs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ray import cloudpickle  # noqa: E402

from paretune.platform import pertnas_supernet  # noqa: E402

real_job_trainable = pertnas_supernet.job_trainable
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


# Ray's workers need not find this test module on their path: send it by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

if __name__ == "__main__":
    from paretune.platform.cli import main

    pertnas_supernet.job_trainable = failing(sys.argv[1])
    sys.exit(main(sys.argv[2:]))
