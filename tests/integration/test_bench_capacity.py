"""`edgespec bench capacity` end to end on a tiny random model (the GPU run is in
docs/gpu-verifier.md): both modes serve tokens over real connections, and the report says how
many more speculation served."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_capacity_compares_speculation_with_batched_cloud_decoding(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "edgespec", "bench", "capacity", "--arch", "tiny-qwen3", "--sessions", "3"]
    command += ["--alpha", "0.8", "-k", "4", "--context", "16", "--budget", "40", "--duration", "1.5"]
    command += ["--warmup", "0.5", "--out", str(tmp_path / "capacity.json")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    [run] = json.loads((tmp_path / "capacity.json").read_text())["runs"]
    spec, cloud = run["phases"]
    assert run["ratio"] == spec["tokens_per_s"] / cloud["tokens_per_s"]
    assert spec["mode"] == "spec" and cloud["mode"] == "cloud"
    assert spec["tokens"] > 0 and cloud["tokens"] > 0
    tally = spec["tally"]  # how the cloud's batches formed, and where its time went
    assert tally["calls"] > 0 and 1 <= tally["mean_batch"] <= 3
    assert tally["prefills"] >= 3 and 0 < tally["busy"] <= 1
    assert "speculation serves" in done.stdout


def test_a_simulated_gpu_runs_the_real_cloud_at_the_step_times_given(tmp_path: Path) -> None:
    """No model: each forward call sleeps 20 ms (+ 1 per session, + 30 per prompt), so the
    busiest the engine can be is bounded by those costs and the calls must show them. The
    sessions' budget is past the cloud's default context: the bench's cloud holds what it asks."""
    command = [sys.executable, "-m", "edgespec", "bench", "capacity", "--simulate", "20,1,30", "--sessions", "3"]
    command += ["--context", "32", "--budget", "5000", "--duration", "2", "--warmup", "0.5"]
    command += ["--out", str(tmp_path / "capacity.json")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads((tmp_path / "capacity.json").read_text())
    assert figures["device"].startswith("simulated GPU")
    for phase in figures["runs"][0]["phases"]:
        tally = phase["tally"]
        assert 20 <= tally["round_ms"] < 40  # 20 ms + 1 ms for each of up to 3 sessions, plus scheduling
        assert tally["calls"] / phase["seconds"] <= 1000 / 20
        gap = tally["gap"]  # the idle time between calls, stage by stage, in the order they happen
        assert 0 <= gap["verdicts_out_ms"] <= gap["launched_ms"] <= gap["next_call_ms"] < 100
        assert gap["first_round_in_ms"] <= gap["last_round_in_ms"] <= gap["launched_ms"]


def test_several_budgets_are_measured_in_turn_and_plotted(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "edgespec", "bench", "capacity", "--simulate", "5,0,10", "--sessions", "2"]
    command += ["--context", "16", "--budget", "60,20", "--duration", "1", "--warmup", "0.3"]
    command += ["--out", str(tmp_path / "capacity.json"), "--plot", str(tmp_path / "capacity.png")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = json.loads((tmp_path / "capacity.json").read_text())["runs"]
    assert [run["plan"]["budget"] for run in runs] == [60, 20]
    assert all(run["ratio"] > 0 for run in runs) and done.stdout.count("speculation serves") == 2
    assert (tmp_path / "capacity.png").read_bytes().startswith(b"\x89PNG")


def test_budgets_must_be_positive_token_counts() -> None:
    for bad in ("0", "100,x", "-5"):
        done = subprocess.run(
            [sys.executable, "-m", "edgespec", "bench", "capacity", f"--budget={bad}"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode != 0 and "--budget" in done.stderr and "Traceback" not in done.stderr


def test_simulated_costs_must_be_three_non_negative_numbers() -> None:
    for bad in ("abc", "1,2", "1,-2,3"):
        done = subprocess.run(
            [sys.executable, "-m", "edgespec", "bench", "capacity", "--simulate", bad],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode != 0 and "--simulate" in done.stderr and "Traceback" not in done.stderr
