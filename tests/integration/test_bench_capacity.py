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
    spec, cloud = json.loads((tmp_path / "capacity.json").read_text())["phases"]
    assert spec["mode"] == "spec" and cloud["mode"] == "cloud"
    assert spec["tokens"] > 0 and cloud["tokens"] > 0
    tally = spec["tally"]  # how the cloud's batches formed, and where its time went
    assert tally["calls"] > 0 and 1 <= tally["mean_batch"] <= 3
    assert tally["prefills"] >= 3 and 0 < tally["busy"] <= 1
    assert "speculation serves" in done.stdout
