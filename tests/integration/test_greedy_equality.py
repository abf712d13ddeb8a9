"""The heart of the suite, part one: greedy speculative output is token-identical to the target
alone, with a real cloud process over TCP, for several prompts and draft lengths, with and without
pipelined drafting, and with the adaptive controller choosing k and cloud bursts."""

from __future__ import annotations

import asyncio

import pytest

from edgespec.config import AUTO, LinkConfig, LinkEmulation, Mode, ModelConfig
from edgespec.edge.launch import start_edge
from edgespec.edge.request import GenerationRequest
from edgespec.metrics.stats import SpecStats
from tests.conftest import TinyPair
from tests.reference import reference_greedy

PROMPTS = [
    "def quicksort(arr):",
    "The invention of the printing press",
    "A hash map stores",
    "for i in range(10):",
]
MAX_TOKENS = 40


Variant = tuple[Mode, int | str, bool]  # mode, k (or "auto"), pipelined drafting
SPEC_VARIANTS: list[Variant] = [(Mode.SPEC, k, pipeline) for k in (1, 3, 8) for pipeline in (False, True)]


async def generate_all(
    port: int, draft: object, variants: list[Variant], link: LinkConfig | None = None
) -> dict[tuple[Mode, int | str, bool, str], list[int]]:
    runtime = await start_edge(ModelConfig(str(draft)), link or LinkConfig(port=port))
    outputs = {}
    try:
        for prompt_text in PROMPTS:
            prompt = runtime.tokenizer.encode(prompt_text)
            for mode, k, pipeline in variants:
                request = GenerationRequest(
                    prompt, MAX_TOKENS, mode=mode, num_speculative_tokens=k, pipeline=pipeline, ignore_eos=True
                )
                outputs[(mode, k, pipeline, prompt_text)] = await runtime.generate(request).collect()
    finally:
        await runtime.aclose()
    return outputs


@pytest.fixture(scope="module")
def outputs(tiny_cloud: int, tiny_pair: TinyPair) -> dict[tuple[Mode, int | str, bool, str], list[int]]:
    variants = [*SPEC_VARIANTS, (Mode.SPEC, AUTO, True), (Mode.CLOUD, 0, False), (Mode.EDGE, 0, False)]
    return asyncio.run(generate_all(tiny_cloud, tiny_pair.draft, variants))


def target_greedy(tiny_pair: TinyPair, prompt_text: str) -> list[int]:
    from transformers import AutoTokenizer

    prompt = AutoTokenizer.from_pretrained(tiny_pair.target).encode(prompt_text)
    return reference_greedy(tiny_pair.target, prompt, MAX_TOKENS)


@pytest.mark.parametrize("variant", SPEC_VARIANTS, ids=lambda v: f"k{v[1]}-{'pipelined' if v[2] else 'sync'}")
@pytest.mark.parametrize("prompt_text", PROMPTS)
def test_spec_output_equals_the_target_alone(
    outputs: dict, tiny_pair: TinyPair, prompt_text: str, variant: Variant
) -> None:
    expected = target_greedy(tiny_pair, prompt_text)
    assert outputs[(*variant, prompt_text)] == expected
    assert outputs[(Mode.CLOUD, 0, False, prompt_text)] == expected


@pytest.mark.parametrize("prompt_text", PROMPTS)
def test_adaptive_k_output_equals_the_target_alone(outputs: dict, tiny_pair: TinyPair, prompt_text: str) -> None:
    assert outputs[(Mode.SPEC, AUTO, True, prompt_text)] == target_greedy(tiny_pair, prompt_text)


def test_over_a_slow_link_the_controller_hands_the_cloud_the_pen_and_output_is_unchanged(
    tiny_cloud: int, tiny_pair: TinyPair
) -> None:
    """With 150 ms of RTT against millisecond forwards, rounds cannot compete with cloud decoding:
    after the first request's opening round the controller switches to decode bursts; the next
    request (the controller remembers the link) sends its Open and a burst together. Both must be
    the target's greedy output exactly."""

    async def run() -> list[tuple[list[int], SpecStats]]:
        link = LinkConfig(port=tiny_cloud, emulation=LinkEmulation(rtt_ms=150))
        runtime = await start_edge(ModelConfig(str(tiny_pair.draft)), link)
        results = []
        try:
            for prompt_text in PROMPTS[:2]:
                prompt = runtime.tokenizer.encode(prompt_text)
                request = GenerationRequest(prompt, MAX_TOKENS, num_speculative_tokens=AUTO, ignore_eos=True)
                generation = runtime.generate(request)
                results.append((await generation.collect(), generation.stats))
            return results
        finally:
            await runtime.aclose()

    (first, first_stats), (second, second_stats) = asyncio.run(run())
    assert first == target_greedy(tiny_pair, PROMPTS[0])
    assert second == target_greedy(tiny_pair, PROMPTS[1])
    assert first_stats.burst_tokens > MAX_TOKENS // 2
    assert second_stats.rounds == 1 and second_stats.burst_tokens == MAX_TOKENS - 1


@pytest.mark.parametrize("prompt_text", PROMPTS)
def test_edge_mode_equals_the_draft_alone(outputs: dict, tiny_pair: TinyPair, prompt_text: str) -> None:
    from transformers import AutoTokenizer

    prompt = AutoTokenizer.from_pretrained(tiny_pair.draft).encode(prompt_text)
    assert outputs[(Mode.EDGE, 0, False, prompt_text)] == reference_greedy(tiny_pair.draft, prompt, MAX_TOKENS)


def test_the_draft_differs_from_the_target(outputs: dict) -> None:
    """Equality must be earned through rejections, not given by a draft that equals its target."""
    for prompt_text in PROMPTS:
        assert outputs[(Mode.SPEC, 3, False, prompt_text)] != outputs[(Mode.EDGE, 0, False, prompt_text)]


def test_a_cloud_on_the_static_engine_gives_the_same_tokens(tiny_pair: TinyPair) -> None:
    """The GPU fast path's code, run eagerly on this CPU behind a real cloud process."""
    from transformers import AutoTokenizer

    from edgespec.processes import cloud_process

    tokenizer = AutoTokenizer.from_pretrained(tiny_pair.target)
    with cloud_process(tiny_pair.target, "--engine", "static", "--threads", "1") as port:
        variants = [(Mode.SPEC, 3, True), (Mode.CLOUD, 0, False)]
        outputs = asyncio.run(generate_all(port, tiny_pair.draft, variants))
    for prompt_text in PROMPTS:
        expected = reference_greedy(tiny_pair.target, tokenizer.encode(prompt_text), MAX_TOKENS)
        assert outputs[(Mode.SPEC, 3, True, prompt_text)] == expected
        assert outputs[(Mode.CLOUD, 0, False, prompt_text)] == expected
