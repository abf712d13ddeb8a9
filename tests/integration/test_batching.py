"""Verification batched across sessions: rounds that queue while the target is busy run together,
and each session still gets exactly the target's greedy output."""

from __future__ import annotations

import asyncio

import pytest

from edgespec.cloud.server import CloudServer
from edgespec.config import LinkConfig, Mode, ModelConfig
from edgespec.edge.launch import start_edge
from edgespec.edge.request import GenerationRequest
from edgespec.protocol.messages import TokenizerId
from tests.conftest import TinyPair
from tests.integration.cloud_fixtures import TOKEN, with_server
from tests.reference import reference_greedy

PROMPTS = [[5, 6, 7, 8], [40, 41], [100, 3, 77, 9, 12], [250, 251, 252], [60], [17, 18, 19, 20, 21, 22]]
TOKENS = 24


def batch_sizes(server: CloudServer) -> tuple[float, float]:
    """(batches, sessions in them) so far."""
    samples = {s.name: s.value for m in server.metrics.batch_size.collect() for s in m.samples}
    return samples["edgespec:cloud_verify_batch_size_count"], samples["edgespec:cloud_verify_batch_size_sum"]


@pytest.mark.parametrize("engine", ["torch", "static"])
def test_concurrent_sessions_are_verified_in_batches_and_stay_exact(tiny_pair: TinyPair, engine: str) -> None:
    outputs: list[list[int]] = []

    async def scenario(server: CloudServer, port: int, identity: TokenizerId) -> None:
        runtime = await start_edge(ModelConfig(str(tiny_pair.draft)), LinkConfig(port=port, auth_token=TOKEN))
        try:
            requests = [
                GenerationRequest(p, TOKENS, mode=Mode.SPEC, num_speculative_tokens=3, ignore_eos=True) for p in PROMPTS
            ]
            outputs.extend(await asyncio.gather(*(runtime.generate(r).collect() for r in requests)))
        finally:
            await runtime.aclose()
        batches, rounds = batch_sizes(server)
        assert rounds > batches  # some forward calls verified several sessions

    with_server(tiny_pair, scenario, model=ModelConfig(str(tiny_pair.target), engine=engine))
    for prompt, output in zip(PROMPTS, outputs, strict=True):
        assert output == reference_greedy(tiny_pair.target, prompt, TOKENS)
