"""The sweep against the analytical model: measure each draft length's round costs, predict every
cell from its RTT, and find the RTT above which speculation loses to cloud decoding."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from edgespec.bench.model import SpecTiming, alpha_from_mean_length, crossover_rtt_s
from edgespec.bench.sweep import Cell, Drafting
from edgespec.config import Mode

MS = 1e-3


@dataclass(frozen=True)
class Analysis:
    timings: dict[int, SpecTiming]  # spec mode, by k
    decode_s: float | None  # cloud mode: time per output token, the RTT taken out
    predicted: dict[int, float]  # id(cell) → predicted tokens/s, for spec and cloud cells
    crossover_ms: float | None

    def prediction(self, cell: Cell) -> float | None:
        return self.predicted.get(id(cell))

    def error(self, cell: Cell) -> float | None:
        """Measured over predicted, minus one."""
        predicted = self.prediction(cell)
        return None if predicted is None else cell.tokens_per_s / predicted - 1


def analyse(cells: list[Cell]) -> Analysis:
    spec: dict[int, list[Cell]] = {}
    for cell in cells:
        if _modelled_spec(cell):
            spec.setdefault(cell.k, []).append(cell)
    timings = {k: _calibrate(k_cells) for k, k_cells in spec.items()}
    cloud = [cell for cell in cells if cell.mode is Mode.CLOUD]
    decode_s = statistics.median(_decode_s(cell) for cell in cloud) if cloud else None
    predicted: dict[int, float] = {}
    for cell in cells:
        if _modelled_spec(cell):
            predicted[id(cell)] = timings[cell.k].tokens_per_s(cell.rtt_ms * MS)
        elif cell.mode is Mode.CLOUD and decode_s is not None:
            # streaming: the RTT is paid once per request, not per token
            wall = decode_s * cell.stats.output_tokens + cell.rtt_ms * MS * cell.requests
            predicted[id(cell)] = cell.stats.output_tokens / wall
    crossover = None
    if decode_s is not None and timings:
        crossover = crossover_rtt_s(list(timings.values()), decode_s) / MS
    return Analysis(timings, decode_s, predicted, crossover)


def _modelled_spec(cell: Cell) -> bool:
    """The analytical model describes synchronous rounds of a fixed k."""
    return cell.mode is Mode.SPEC and cell.drafting is Drafting.SYNC


def _calibrate(cells: list[Cell]) -> SpecTiming:
    """A round's costs for one k. Each is measured in every cell and combined by its median over
    the RTTs (none of them depends on the RTT), so one noisy cell does not skew the model."""
    first = cells[0].stats
    mean_length = first.output_tokens / first.rounds  # committed per round (greedy: alike in every cell)
    draft_s = statistics.median(c.stats.draft_s / c.stats.rounds for c in cells)
    verify_s = statistics.median(c.stats.verify_s / c.stats.rounds for c in cells)
    overhead_s = statistics.median(  # the rest of a round: protocol, scheduling, the prefill's share
        c.stats.wall_s / c.stats.rounds - (c.stats.draft_s + c.stats.verify_s) / c.stats.rounds - c.rtt_ms * MS
        for c in cells
    )
    k = cells[0].k
    return SpecTiming(k, alpha_from_mean_length(mean_length, k), draft_s, verify_s, overhead_s)


def _decode_s(cell: Cell) -> float:
    """Cloud mode's time per output token with the RTT taken out."""
    return (cell.stats.wall_s - cell.rtt_ms * MS * cell.requests) / cell.stats.output_tokens
