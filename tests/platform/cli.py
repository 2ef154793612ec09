"""The ``paretune`` command in a subprocess, for the platform tests that run it end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_paretune(
    *args: str,
    cwd: str | os.PathLike = ROOT,
    env: dict[str, str] | None = None,
    timeout: float = 900,
    driver: list[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m paretune <args>`` in ``cwd``, output captured as text. It starts a Ray of its
    own (``RAY_ADDRESS=local``), not the test session's cluster; ``env`` adds variables;
    ``driver`` (a test script and its arguments) runs in place of ``-m paretune``."""
    return subprocess.run(
        [sys.executable, *(driver or ["-m", "paretune"]), *args],
        cwd=cwd,
        env={**os.environ, "RAY_ADDRESS": "local", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tail(proc: subprocess.CompletedProcess[str], chars: int = 3000) -> str:
    """The end of a finished command's stdout and stderr (an assertion's message)."""
    return proc.stdout[-chars:] + proc.stderr[-chars:]
