"""Link emulation end to end against a real cloud process: pings and rounds pay the configured
RTT, and the output is still exactly the target's under jitter, a narrow link and loss."""

from __future__ import annotations

import asyncio
import statistics

from edgespec.config import LinkConfig, LinkEmulation, Mode, ModelConfig
from edgespec.edge.launch import start_edge
from edgespec.edge.request import GenerationRequest
from edgespec.transport.client import CloudLink
from tests.conftest import TinyPair
from tests.reference import reference_greedy


def test_pings_pay_the_emulated_rtt(tiny_cloud: int, tiny_pair: TinyPair) -> None:
    async def pings() -> list[float]:
        runtime = await start_edge(ModelConfig(str(tiny_pair.draft)), LinkConfig(port=tiny_cloud))
        identity = runtime.tokenizer.identity
        await runtime.aclose()
        link = await CloudLink.connect(LinkConfig(port=tiny_cloud, emulation=LinkEmulation(rtt_ms=40)), identity)
        try:
            return [await link.ping() for _ in range(5)]
        finally:
            await link.close()

    assert 0.040 <= statistics.median(asyncio.run(pings())) < 0.060


def test_output_is_exact_through_a_bad_link(tiny_cloud: int, tiny_pair: TinyPair) -> None:
    emulation = LinkEmulation(rtt_ms=20, jitter_ms=5, bandwidth_mbit=2, loss=0.05, seed=3)
    prompt = [5, 6, 7, 8]

    async def generate() -> tuple[list[int], float, int]:
        runtime = await start_edge(ModelConfig(str(tiny_pair.draft)), LinkConfig(port=tiny_cloud, emulation=emulation))
        try:
            generation = runtime.generate(GenerationRequest(prompt, 24, mode=Mode.SPEC, ignore_eos=True))
            tokens = await generation.collect()
            return tokens, generation.stats.network_s, generation.stats.rounds
        finally:
            await runtime.aclose()

    tokens, network_s, rounds = asyncio.run(generate())
    assert tokens == reference_greedy(tiny_pair.target, prompt, 24)
    assert network_s / rounds >= 0.015  # every round paid (most of) the 20 ms RTT
