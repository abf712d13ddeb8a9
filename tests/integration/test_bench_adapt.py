"""`edgespec bench adapt` on the tiny pair: through a step from 0 to 150 ms of RTT, whose rounds
cost milliseconds of compute, auto must notice the slower link and hand the cloud the pen."""

from __future__ import annotations

import json

import pytest

from edgespec.cli import main
from tests.conftest import TinyPair


@pytest.fixture(scope="module")
def record(tiny_pair: TinyPair, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("adapt")
    models = ["--draft", str(tiny_pair.draft), "--target", str(tiny_pair.target)]
    steps = ["--rtt-before-ms", "0", "--rtt-after-ms", "150", "--exchanges-before", "6", "--exchanges-after", "14"]
    main(["bench", "adapt", *models, *steps, "--k", "2,4", "--max-tokens", "24", "--out", str(out)])
    assert (out / "adapt.png").stat().st_size > 10_000
    return json.loads((out / "results.json").read_text())


def test_after_the_step_auto_turns_to_cloud_bursts(record: dict) -> None:
    before = [e for e in record["exchanges"] if not e["after_step"]]
    after = [e for e in record["exchanges"] if e["after_step"]]
    assert len(before) >= 6 and len(after) >= 14
    assert all(e["tokens"] > 0 and e["seconds"] > 0 for e in before + after)
    assert record["window_requests"] == 2  # one request of each built-in prompt
    assert [e["choice"] for e in after[-5:]] == ["cloud"] * 5


def test_references_cover_each_fixed_k_and_the_cloud(record: dict) -> None:
    assert set(record["references_tokens_per_s"]) == {"k=2", "k=4", "cloud"}
    assert all(rate > 0 for rate in record["references_tokens_per_s"].values())
    assert record["best_reference"] == "cloud"
