"""The emulated link's timing: half the RTT each way, serialisation at the bandwidth with frames
queueing behind each other, jitter that never reorders, loss as a retransmission timeout."""

from __future__ import annotations

import random
import statistics

import pytest

from edgespec.config import LinkEmulation
from edgespec.transport.emulation import MIN_RTO_S, Direction


def direction(**settings: float) -> Direction:
    return Direction(LinkEmulation(**settings), random.Random(0))  # type: ignore[arg-type]


def test_each_way_takes_half_the_rtt() -> None:
    assert direction(rtt_ms=50).arrival(now=10.0, size=100) == pytest.approx(10.025)


def test_frames_serialise_at_the_bandwidth_and_queue() -> None:
    link = direction(rtt_ms=0, bandwidth_mbit=8)
    assert link.arrival(now=0.0, size=100_000) == pytest.approx(0.1)
    assert link.arrival(now=0.0, size=100_000) == pytest.approx(0.2)  # waited for the first
    assert link.arrival(now=1.0, size=1_000) == pytest.approx(1.001)  # the link was idle again


def test_jitter_spreads_delays_around_half_the_rtt() -> None:
    link = direction(rtt_ms=40, jitter_ms=10)
    delays = [link.arrival(now=t, size=50) - t for t in range(2000)]  # a second apart: no queueing
    assert statistics.median(delays) == pytest.approx(0.020, abs=0.001)
    assert statistics.stdev(delays) == pytest.approx(0.010 / 2**0.5, rel=0.1)


def test_jitter_never_reorders_frames() -> None:
    link = direction(rtt_ms=40, jitter_ms=10)
    arrivals = [link.arrival(now=i * 0.001, size=50) for i in range(2000)]
    assert arrivals == sorted(arrivals)  # a late frame holds back the ones behind it, as in TCP


def test_a_lost_frame_arrives_one_retransmission_timeout_late() -> None:
    link = direction(rtt_ms=10, loss=0.5)
    delays = [link.arrival(now=t, size=50) - t for t in range(1000)]  # a second apart: no queueing
    late = [d for d in delays if d > 0.1]
    assert 400 < len(late) < 600
    assert all(d == pytest.approx(0.005 + MIN_RTO_S) for d in late)


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"rtt_ms": -1}, "negative"), ({"bandwidth_mbit": 0}, "bandwidth"), ({"loss": 1.0}, "loss")],
)
def test_bad_settings_are_refused(settings: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LinkEmulation(**settings)  # type: ignore[arg-type]
