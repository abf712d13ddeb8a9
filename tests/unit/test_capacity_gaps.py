"""How `bench capacity` splits the engine's idle time between calls into stages
(bench/capacity_tally.py), from the batcher's events."""

from __future__ import annotations

import pytest

from edgespec.bench.capacity_tally import BatchClock, Call


def test_each_gap_is_split_at_the_verdicts_the_first_and_last_rounds_the_launch_and_the_next_call() -> None:
    clock = BatchClock()
    calls = [Call(0.0, 0.010, 2, 0), Call(0.015, 0.010, 2, 0), Call(0.031, 0.010, 2, 0)]
    clock.released(0.0105)
    clock.arrived(0.011)
    clock.arrived(0.012)
    clock.launched(0.0125)  # the second call starts 2.5 ms later: the worker's hand-over
    clock.arrived(0.020)  # came during the second call: not waited for
    clock.released(0.0255)
    clock.launched(0.0265)
    gap = clock.gap(calls)
    assert gap is not None
    assert gap.verdicts_out_ms == pytest.approx(0.5)
    assert gap.first_round_in_ms == pytest.approx((1.0 + 0.0) / 2)  # the second gap waited for no round
    assert gap.last_round_in_ms == pytest.approx((2.0 + 0.0) / 2)
    assert gap.launched_ms == pytest.approx((2.5 + 1.5) / 2)
    assert gap.next_call_ms == pytest.approx((5.0 + 6.0) / 2)


def test_calls_of_one_batch_have_no_gap_to_time() -> None:
    """A prompt fed in pieces: two calls with no launch between them."""
    clock = BatchClock()
    assert clock.gap([Call(0.0, 0.01, 1, 1), Call(0.011, 0.01, 1, 1)]) is None
