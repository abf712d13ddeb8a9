"""`edgespec bench verifier` end to end on a GPU (skipped without one), on a tiny architecture so
that it takes seconds: the cells and the prompts it was asked for, each against its floor."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("prompts", [[], [20, 100]])
def test_the_verifier_bench_times_its_cells_and_prompts(prompts: list[int], tmp_path: Path) -> None:
    out = tmp_path / "verifier.json"
    command = [sys.executable, "-m", "edgespec.bench.verifier", "--arch", "tiny-qwen3", "--batch", "1",
               "--k", "4", "--context", "64", "--no-eager", "--repeats", "3", "--out", str(out)]  # fmt: skip
    if prompts:
        command += ["--prompts", ",".join(map(str, prompts))]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert [(cell["batch"], cell["k"], cell["context"]) for cell in result["cells"]] == [(1, 4, 64)]
    assert [cell["tokens"] for cell in result["prompts"]] == prompts
    assert all(cell["ms"] > 0 and cell["floor_ms"] > 0 for cell in result["cells"] + result["prompts"])
