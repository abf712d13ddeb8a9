"""`edgespec bench load` end to end, briefly: a cloud and two edges as processes, eight streams;
the report says what failed and what leaked, and the exit status follows its checks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import TinyPair


def bench_load(tiny_pair: TinyPair, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "edgespec", "bench", "load", "--target", str(tiny_pair.target)]
    command += ["--draft", str(tiny_pair.draft), "--edges", "2", "--concurrency", "8", "--warmup", "1"]
    command += ["--duration", "4", "--out", str(out), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_a_short_load_run_passes_its_checks_and_reports(tiny_pair: TinyPair, tmp_path: Path) -> None:
    done = bench_load(tiny_pair, tmp_path / "load.json")
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    report = json.loads((tmp_path / "load.json").read_text())
    assert report["passed"] and report["failed"] == 0 and report["requests"] > 8
    assert set(report["memory"]) == {"cloud", "edge0", "edge1"}
    assert report["open_after"] == {"cloud": 0, "edge0": 0, "edge1": 0}
    assert report["latency_ms"]["p99_itl_ms"] >= report["latency_ms"]["median_itl_ms"] > 0
    assert "[pass] no failed request" in done.stdout and "p99" in done.stdout


def test_failed_requests_fail_the_run(tiny_pair: TinyPair, tmp_path: Path) -> None:
    done = bench_load(tiny_pair, tmp_path / "load.json", "--output-len", "2000")  # past the context
    assert done.returncode == 1
    report = json.loads((tmp_path / "load.json").read_text())
    assert report["failed"] > 0 and "HTTP 400" in report["errors"][0]
    assert "[FAIL] no failed request" in done.stdout
