"""The heart of the suite, part one: greedy speculative output is token-identical to the target
alone, with a real cloud process over TCP, for several prompts and draft lengths."""

from __future__ import annotations

import asyncio

import pytest

from edgespec.config import LinkConfig, Mode, ModelConfig
from edgespec.edge.launch import start_edge
from edgespec.edge.runtime import GenerationRequest
from tests.conftest import TinyPair
from tests.reference import reference_greedy

PROMPTS = [
    "def quicksort(arr):",
    "The invention of the printing press",
    "A hash map stores",
    "for i in range(10):",
]
MAX_TOKENS = 40


async def generate_all(
    port: int, draft: object, modes_and_k: list[tuple[Mode, int]]
) -> dict[tuple[Mode, int, str], list[int]]:
    runtime = await start_edge(ModelConfig(str(draft)), LinkConfig(port=port))
    outputs = {}
    try:
        for prompt_text in PROMPTS:
            prompt = runtime.tokenizer.encode(prompt_text)
            for mode, k in modes_and_k:
                request = GenerationRequest(prompt, MAX_TOKENS, mode=mode, num_speculative_tokens=k, ignore_eos=True)
                outputs[(mode, k, prompt_text)] = await runtime.generate(request).collect()
    finally:
        await runtime.aclose()
    return outputs


@pytest.fixture(scope="module")
def outputs(tiny_cloud: int, tiny_pair: TinyPair) -> dict[tuple[Mode, int, str], list[int]]:
    combos = [(Mode.SPEC, 1), (Mode.SPEC, 3), (Mode.SPEC, 8), (Mode.CLOUD, 0), (Mode.EDGE, 0)]
    return asyncio.run(generate_all(tiny_cloud, tiny_pair.draft, combos))


@pytest.mark.parametrize("k", [1, 3, 8])
@pytest.mark.parametrize("prompt_text", PROMPTS)
def test_spec_output_equals_the_target_alone(outputs: dict, tiny_pair: TinyPair, prompt_text: str, k: int) -> None:
    from transformers import AutoTokenizer

    prompt = AutoTokenizer.from_pretrained(tiny_pair.target).encode(prompt_text)
    expected = reference_greedy(tiny_pair.target, prompt, MAX_TOKENS)
    assert outputs[(Mode.SPEC, k, prompt_text)] == expected
    assert outputs[(Mode.CLOUD, 0, prompt_text)] == expected


@pytest.mark.parametrize("prompt_text", PROMPTS)
def test_edge_mode_equals_the_draft_alone(outputs: dict, tiny_pair: TinyPair, prompt_text: str) -> None:
    from transformers import AutoTokenizer

    prompt = AutoTokenizer.from_pretrained(tiny_pair.draft).encode(prompt_text)
    assert outputs[(Mode.EDGE, 0, prompt_text)] == reference_greedy(tiny_pair.draft, prompt, MAX_TOKENS)


def test_the_draft_differs_from_the_target(outputs: dict) -> None:
    """Equality must be earned through rejections, not given by a draft that equals its target."""
    for prompt_text in PROMPTS:
        assert outputs[(Mode.SPEC, 3, prompt_text)] != outputs[(Mode.EDGE, 0, prompt_text)]


def test_a_cloud_on_the_static_engine_gives_the_same_tokens(tiny_pair: TinyPair) -> None:
    """The GPU fast path's code, run eagerly on this CPU behind a real cloud process."""
    from transformers import AutoTokenizer

    from edgespec.processes import cloud_process

    tokenizer = AutoTokenizer.from_pretrained(tiny_pair.target)
    with cloud_process(tiny_pair.target, "--engine", "static", "--threads", "1") as port:
        outputs = asyncio.run(generate_all(port, tiny_pair.draft, [(Mode.SPEC, 3), (Mode.CLOUD, 0)]))
    for prompt_text in PROMPTS:
        expected = reference_greedy(tiny_pair.target, tokenizer.encode(prompt_text), MAX_TOKENS)
        assert outputs[(Mode.SPEC, 3, prompt_text)] == expected
        assert outputs[(Mode.CLOUD, 0, prompt_text)] == expected
