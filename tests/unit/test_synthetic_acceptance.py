"""Synthetic acceptance, for benchmarks without real weights: each drafted token is accepted with
the set probability whatever the logits say, the cloud's token is its greedy choice where the run
stopped, and the handshake says the output is not the target's."""

from __future__ import annotations

import torch

from edgespec.bench.protocol_overhead import InstantEngine
from edgespec.cloud.verifier import Verifier
from edgespec.config import SamplingParams
from edgespec.protocol.messages import Draft


def test_drafted_tokens_are_accepted_at_the_set_rate() -> None:
    verifier = Verifier(InstantEngine(), synthetic_acceptance=0.7)
    session = verifier.open([1, 2, 3], SamplingParams(seed=5))
    accepted = drafted = 0
    for _ in range(2000):
        result = verifier.verify(session, Draft(tokens=[7]))  # token 7 is never the engine's argmax
        accepted += result.accepted
        drafted += 1
        assert result.token == 0  # the engine's greedy choice, wherever the run stopped
    assert abs(accepted / drafted - 0.7) < 0.03  # 2000 Bernoulli draws: σ ≈ 0.01


def test_a_run_stops_at_the_first_rejection_and_the_cloud_adds_its_greedy_token() -> None:
    verifier = Verifier(InstantEngine(), synthetic_acceptance=0.0)
    session = verifier.open([1], SamplingParams())
    result = verifier.verify(session, Draft(tokens=[9, 9, 9]))
    assert result.accepted == 0 and result.token == int(torch.zeros(1).argmax())
    assert session.committed == [1, 0]


def test_the_handshake_says_the_output_is_not_the_targets() -> None:
    assert "not the target's" in Verifier(InstantEngine(), synthetic_acceptance=0.8).numerics
    assert Verifier(InstantEngine()).numerics == InstantEngine.numerics
