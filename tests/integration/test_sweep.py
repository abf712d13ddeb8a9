"""A reduced sweep on the tiny pair: every mode and drafting scheme, two RTTs, two draft lengths;
the report, results JSON and plots are written and say what the model predicts beside each
measured cell, and how auto and pipelining compare with fixed draft lengths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgespec.cli import main
from tests.conftest import TinyPair


@pytest.fixture(scope="module")
def results(tiny_pair: TinyPair, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sweep")
    args = ["bench", "sweep", "--draft", str(tiny_pair.draft), "--target", str(tiny_pair.target)]
    main([*args, "--rtt-ms", "0,30", "--k", "1,2", "--max-tokens", "16", "--prompts", "1", "--out", str(out)])
    return out


def test_every_cell_is_measured_once(results: Path) -> None:
    cells = json.loads((results / "results.json").read_text())["cells"]
    keys = sorted((c["rtt_ms"], c["mode"], c["k"], c["drafting"]) for c in cells)
    expected = [(0.0, "edge", 0, "sync")]
    for rtt in (0.0, 30.0):
        expected += [(rtt, "cloud", 0, "sync"), (rtt, "spec", 0, "auto")]
        expected += [(rtt, mode, k, "sync") for mode in ("colocated", "spec") for k in (1, 2)]
        expected += [(rtt, "spec", k, "pipelined") for k in (1, 2)]
    assert keys == sorted(expected)
    assert {c["output_tokens"] for c in cells} == {16}


def test_pipelined_cells_draft_ahead_and_auto_cells_decide(results: Path) -> None:
    cells = json.loads((results / "results.json").read_text())["cells"]
    pipelined = [c for c in cells if c["drafting"] == "pipelined"]
    assert all(c["lookahead_hits"] + c["lookahead_misses"] > 0 for c in pipelined)
    assert all(c["lookahead_hits"] + c["lookahead_misses"] == 0 for c in cells if c["drafting"] == "sync")
    auto = [c for c in cells if c["drafting"] == "auto"]
    assert all(c["rounds"] + c["burst_tokens"] > 0 for c in auto)


def test_speculation_pays_the_rtt_each_round_as_the_model_says(results: Path) -> None:
    cells = json.loads((results / "results.json").read_text())["cells"]
    spec = {(c["rtt_ms"], c["k"]): c for c in cells if c["mode"] == "spec" and c["drafting"] == "sync"}
    for k in (1, 2):
        near, far = spec[(0.0, k)], spec[(30.0, k)]
        assert far["tokens_per_s"] < near["tokens_per_s"]
        assert far["predicted_tokens_per_s"] < near["predicted_tokens_per_s"]
        # Tiny models compute a round in a few ms, so scheduling noise swamps the RTT-0 cells; across
        # 30 ms the model must hold.
        assert far["predicted_tokens_per_s"] == pytest.approx(far["tokens_per_s"], rel=0.25)
        assert far["network_s"] / far["rounds"] >= 0.030  # every round crossed the 30 ms link


def test_the_report_and_plots_are_written(results: Path) -> None:
    report = (results / "report.md").read_text()
    assert "| RTT ms | cell | tok/s | model tok/s |" in report and "rossover" in report
    assert "| RTT ms | best fixed | tok/s | cloud tok/s | auto tok/s | auto vs best fixed |" in report
    plots = ("tokens_per_s_vs_rtt", "ttft_vs_rtt", "acceptance_per_position", "cloud_forwards_per_token")
    for plot in (*plots, "strategies_vs_rtt"):
        assert (results / f"{plot}.png").stat().st_size > 10_000
        assert f"({plot}.png)" in report


def test_a_saved_sweep_can_be_reported_again(results: Path) -> None:
    report = (results / "report.md").read_text()
    (results / "report.md").unlink()
    main(["bench", "sweep", "--report-from", str(results)])
    assert (results / "report.md").read_text() == report
