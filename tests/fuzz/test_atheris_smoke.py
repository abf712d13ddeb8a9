"""The atheris harness runs: a short coverage-guided run in every CI run; the long one is a command
(docs/reliability.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).with_name("atheris_protocol.py")


def test_a_short_coverage_guided_run_finds_no_crash() -> None:
    pytest.importorskip("atheris")
    done = subprocess.run(
        [sys.executable, str(HARNESS), "-atheris_runs=5000", "-seed=1"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Done 5000 runs" in done.stderr or "Done 5000 in" in done.stderr
