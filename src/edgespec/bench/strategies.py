"""The sweep's verdict on drafting strategies, per RTT: the best fixed draft length (synchronous
or pipelined), cloud decoding, the adaptive controller against both, and pipelining's gain."""

from __future__ import annotations

from dataclasses import dataclass

from edgespec.bench.sweep import Cell, Drafting
from edgespec.config import Mode


@dataclass(frozen=True)
class AtRtt:
    rtt_ms: float
    best_fixed: Cell | None  # the fastest spec cell of a fixed k, either drafting
    cloud: Cell | None
    auto: Cell | None
    pipelining_gain: dict[int, float]  # k → pipelined tokens/s over synchronous

    @property
    def best_of_spec_and_cloud(self) -> Cell | None:
        candidates = [c for c in (self.best_fixed, self.cloud) if c is not None]
        return max(candidates, key=lambda c: c.tokens_per_s, default=None)

    def auto_against(self, reference: Cell | None) -> float | None:
        """Auto's tokens/s over the reference's, minus one."""
        if self.auto is None or reference is None:
            return None
        return self.auto.tokens_per_s / reference.tokens_per_s - 1


def compare(cells: list[Cell]) -> list[AtRtt]:
    return [_at(rtt, [c for c in cells if c.rtt_ms == rtt]) for rtt in sorted({c.rtt_ms for c in cells})]


def _at(rtt: float, cells: list[Cell]) -> AtRtt:
    spec = [c for c in cells if c.mode is Mode.SPEC]
    fixed = [c for c in spec if c.drafting is not Drafting.AUTO]
    sync = {c.k: c for c in spec if c.drafting is Drafting.SYNC}
    pipelined = {c.k: c for c in spec if c.drafting is Drafting.PIPELINED}
    gain = {k: pipelined[k].tokens_per_s / sync[k].tokens_per_s for k in sorted(sync.keys() & pipelined.keys())}
    return AtRtt(
        rtt,
        max(fixed, key=lambda c: c.tokens_per_s, default=None),
        next((c for c in cells if c.mode is Mode.CLOUD), None),
        next((c for c in spec if c.drafting is Drafting.AUTO), None),
        gain,
    )
