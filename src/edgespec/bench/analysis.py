"""The sweep against the analytical model: calibrate each draft length on the lowest-RTT cell,
predict every other cell, and find the RTT above which speculation loses to cloud decoding."""

from __future__ import annotations

from dataclasses import dataclass

from edgespec.bench.model import SpecTiming, alpha_from_mean_length, crossover_rtt_s
from edgespec.bench.sweep import Cell
from edgespec.config import Mode

MS = 1e-3


@dataclass(frozen=True)
class Analysis:
    timings: dict[int, SpecTiming]  # spec mode, by k, calibrated at the lowest RTT
    decode_s: float | None  # cloud mode: wall time per output token at the lowest RTT
    predicted: dict[int, float]  # id(cell) → predicted tokens/s, for spec and cloud cells
    crossover_ms: float | None

    def prediction(self, cell: Cell) -> float | None:
        return self.predicted.get(id(cell))

    def error(self, cell: Cell) -> float | None:
        """Measured over predicted, minus one."""
        predicted = self.prediction(cell)
        return None if predicted is None else cell.tokens_per_s / predicted - 1


def analyse(cells: list[Cell]) -> Analysis:
    base_rtt = min(cell.rtt_ms for cell in cells)
    timings = {cell.k: _calibrate(cell) for cell in cells if cell.mode is Mode.SPEC and cell.rtt_ms == base_rtt}
    cloud_base = next((c for c in cells if c.mode is Mode.CLOUD and c.rtt_ms == base_rtt), None)
    predicted: dict[int, float] = {}
    for cell in cells:
        extra_s = (cell.rtt_ms - base_rtt) * MS
        if cell.mode is Mode.SPEC and cell.k in timings:
            predicted[id(cell)] = timings[cell.k].tokens_per_s(extra_s)
        elif cell.mode is Mode.CLOUD and cloud_base is not None:
            # streaming: the added RTT is paid once per request, not per token
            wall = cloud_base.stats.wall_s + extra_s * cloud_base.requests
            predicted[id(cell)] = cloud_base.stats.output_tokens / wall
    decode_s = cloud_base.stats.wall_s / cloud_base.stats.output_tokens if cloud_base else None
    crossover = None
    if decode_s is not None and timings:
        crossover = (crossover_rtt_s(list(timings.values()), decode_s) / MS) + base_rtt
    return Analysis(timings, decode_s, predicted, crossover)


def _calibrate(cell: Cell) -> SpecTiming:
    """A round's costs as this cell measured them; its RTT becomes the model's zero."""
    stats = cell.stats
    mean_length = stats.output_tokens / stats.rounds  # committed per round, the last short one included
    wall_per_round = stats.wall_s / stats.rounds
    draft_s = stats.draft_s / stats.rounds
    verify_s = stats.verify_s / stats.rounds
    overhead_s = wall_per_round - draft_s - verify_s  # link, protocol, scheduling
    return SpecTiming(cell.k, alpha_from_mean_length(mean_length, cell.k), draft_s, verify_s, overhead_s)
