"""The analytical model: E[N], its inversion, and the crossover RTT."""

from __future__ import annotations

import pytest

from edgespec.bench.model import (
    SpecTiming,
    alpha_from_mean_length,
    cloud_tokens_per_s,
    crossover_rtt_s,
    expected_tokens_per_round,
)


def test_expected_tokens_per_round() -> None:
    assert expected_tokens_per_round(0.0, 4) == 1.0  # only the cloud's own token
    assert expected_tokens_per_round(1.0, 4) == 5.0  # everything accepted, plus the bonus
    assert expected_tokens_per_round(0.5, 2) == pytest.approx(1 + 0.5 + 0.25)


@pytest.mark.parametrize(("alpha", "k"), [(0.1, 1), (0.6, 4), (0.9, 8)])
def test_alpha_is_recovered_from_the_mean_length(alpha: float, k: int) -> None:
    assert alpha_from_mean_length(expected_tokens_per_round(alpha, k), k) == pytest.approx(alpha, abs=1e-9)


def test_spec_throughput_and_the_crossover_agree() -> None:
    timing = SpecTiming(k=4, alpha=0.8, draft_s=0.04, verify_s=0.05, overhead_s=0.001)
    decode_s = 0.04  # the cloud alone: 25 tokens/s
    crossover = timing.crossover_rtt_s(decode_s)
    assert timing.tokens_per_s(crossover) == pytest.approx(cloud_tokens_per_s(decode_s))
    assert timing.tokens_per_s(crossover / 2) > cloud_tokens_per_s(decode_s) > timing.tokens_per_s(crossover * 2)
    slower = SpecTiming(k=1, alpha=0.8, draft_s=0.04, verify_s=0.05, overhead_s=0.001)
    assert crossover_rtt_s([slower, timing], decode_s) == pytest.approx(
        max(crossover, slower.crossover_rtt_s(decode_s))
    )
