"""``python tests/platform/run_with_faults.py CONFIG.yaml '{"delay_s": 0.4}'``: ``paretune run``
with :class:`tests.platform.faults.Faults` (for tests that kill the driver)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from paretune.platform.launcher import run  # noqa: E402
from tests.platform.faults import Faults  # noqa: E402

if __name__ == "__main__":
    run(sys.argv[1], verbose=0, evaluator_wrapper=Faults(**json.loads(sys.argv[2])))
