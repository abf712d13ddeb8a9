"""A cloud split over two and four real GPUs (each skipped with fewer; run on the lent multi-GPU
machines), end to end: `edgespec cloud --tensor-parallel-size N` on a small Qwen3 target gives the
target's greedy output through the protocol, speculating and decoding, and then stops when asked
(its ranks leave their group instead of hanging there)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

from edgespec.config import Mode
from edgespec.engine import tiny
from edgespec.processes import CLOUD_READY, ready_port, started_process
from tests.gpu.test_peer_sum_gpu import SHARDABLE, WORLDS
from tests.integration.test_greedy_equality import MAX_TOKENS, PROMPTS, generate_all
from tests.reference import reference_greedy

pytestmark = pytest.mark.gpu

STOP_S = 120  # to leave the group and exit after SIGINT; a hang in the teardown runs past it


@pytest.fixture(scope="module")
def small_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A target whose heads, key/value heads, MLP and vocabulary split four ways, and its draft."""
    root = tmp_path_factory.mktemp("sharded")
    tokenizer = tiny.build_tokenizer(tiny.TINY_VOCAB)
    torch.manual_seed(0)
    target = Qwen3ForCausalLM(Qwen3Config(**SHARDABLE | {"vocab_size": len(tokenizer)})).eval()
    draft = tiny.perturbed_copy(target, noise=0.02, seed=1)
    return tiny.save(target, tokenizer, root / "target"), tiny.save(draft, tokenizer, root / "draft")


@pytest.mark.parametrize("world", WORLDS)
def test_a_cloud_split_over_gpus_gives_the_targets_greedy_output_and_stops(
    world: int, small_pair: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target, draft = small_pair
    # float32 products in full precision (Triton's default is TF32), so that transformers' greedy
    # on the CPU is the same target to within near-ties that random weights rarely make
    monkeypatch.setenv("TRITON_F32_DEFAULT", "ieee")
    args = ["cloud", "--model", str(target), "--port", "0", "--device", "cuda", "--dtype", "float32",
            "--tensor-parallel-size", str(world), "--max-sessions", "8"]  # fmt: skip
    log = tmp_path / "cloud.log"
    with started_process(args, CLOUD_READY, log) as cloud:
        variants = [(Mode.SPEC, 3, False), (Mode.CLOUD, 0, False)]
        outputs = asyncio.run(generate_all(ready_port(cloud.ready), draft, variants))
        cloud.process.send_signal(signal.SIGINT)
        try:
            status = cloud.process.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the cloud over {world} GPUs did not stop within {STOP_S} s:\n{log.read_text()[-2000:]}")
    assert status == 130, log.read_text()[-2000:]  # interrupted, and nothing failed on the way out
    tokenizer = AutoTokenizer.from_pretrained(target)
    for prompt_text in PROMPTS:
        expected = reference_greedy(target, tokenizer.encode(prompt_text), MAX_TOKENS)
        assert outputs[(Mode.SPEC, 3, False, prompt_text)] == expected
        assert outputs[(Mode.CLOUD, 0, False, prompt_text)] == expected
