"""A reduced sweep on the tiny pair: every mode, two RTTs, two draft lengths; the report, results
JSON and plots are written and say what the model predicts beside each measured cell."""

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
    keys = sorted((c["rtt_ms"], c["mode"], c["k"]) for c in cells)
    expected = [(0.0, "edge", 0)] + [
        (rtt, mode, k) for rtt in (0.0, 30.0) for mode in ("cloud", "colocated", "spec") for k in (1, 2)
    ]
    expected = sorted({(rtt, mode, 0 if mode == "cloud" else k) for rtt, mode, k in expected})
    assert keys == expected
    assert {c["output_tokens"] for c in cells} == {16}


def test_speculation_pays_the_rtt_each_round_as_the_model_says(results: Path) -> None:
    cells = json.loads((results / "results.json").read_text())["cells"]
    spec = {(c["rtt_ms"], c["k"]): c for c in cells if c["mode"] == "spec"}
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
    assert "| RTT ms | mode | k | tok/s | model tok/s |" in report and "rossover" in report
    for plot in ("tokens_per_s_vs_rtt", "ttft_vs_rtt", "acceptance_per_position", "cloud_forwards_per_token"):
        assert (results / f"{plot}.png").stat().st_size > 10_000
        assert f"({plot}.png)" in report


def test_a_saved_sweep_can_be_reported_again(results: Path) -> None:
    report = (results / "report.md").read_text()
    (results / "report.md").unlink()
    main(["bench", "sweep", "--report-from", str(results)])
    assert (results / "report.md").read_text() == report
