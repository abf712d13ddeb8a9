"""Where a capacity phase's GPU time went: the cloud's engine with every batched forward call
counted and timed to its results. A call that prefills a session's prompt is told apart from a
call of rounds alone, because openings, not rounds, are what speculation cannot make cheaper.
Between calls the engine idles; the batcher's clock says on what: the verdicts being decided and
handed back, the next rounds coming in (sending, the edges, receiving), the batch being launched."""

from __future__ import annotations

import bisect
import itertools
import statistics
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch

from edgespec.engine.base import Work
from edgespec.engine.static_engine import StaticEngine, is_prefill

if TYPE_CHECKING:
    from edgespec.bench.simulated_gpu import SimulatedGPU


@dataclass(frozen=True)
class Call:
    started: float  # time.monotonic()
    seconds: float  # launch to results on the host
    sessions: int
    prefills: int  # sessions of the call feeding a prompt (more tokens than a graph serves)


@dataclass(frozen=True)
class Tally:
    """A phase's forward calls, in figures."""

    calls: int
    mean_batch: float  # sessions per call
    busy: float  # share of the phase the engine was computing
    round_ms: float  # median call without a prefill
    prefill_ms: float  # median call with one or more prefills
    prefills: int
    graphs_captured: list[str]  # new CUDA graph shapes met (each a stall), as GraphKey names them
    capture_s: float  # seconds those captures took
    gap: Gap | None = None  # the idle time between one call and the next, by stage

    @classmethod
    def of(cls, calls: list[Call], seconds: float, graphs: tuple[list[str], float], gap: Gap | None = None) -> Tally:
        rounds = [c.seconds for c in calls if not c.prefills]
        opening = [c.seconds for c in calls if c.prefills]
        return cls(
            calls=len(calls),
            mean_batch=sum(c.sessions for c in calls) / max(len(calls), 1),
            busy=sum(c.seconds for c in calls) / seconds,
            round_ms=1000 * statistics.median(rounds) if rounds else 0.0,
            prefill_ms=1000 * statistics.median(opening) if opening else 0.0,
            prefills=sum(c.prefills for c in calls),
            graphs_captured=graphs[0],
            capture_s=graphs[1],
            gap=gap,
        )


@dataclass(frozen=True)
class Gap:
    """Median milliseconds from a call's results to: its verdicts leaving the worker (decided,
    handed to the event loop), the first and the last round the next batch waited for (the loop
    sends every verdict before it reads a round, so the first comes after all the sends and one
    edge's turnaround; the span to the last is mostly the loop reading the rest), that batch's
    launch, and the next call starting on the engine."""

    verdicts_out_ms: float
    first_round_in_ms: float
    last_round_in_ms: float
    launched_ms: float
    next_call_ms: float


@dataclass
class BatchClock:
    """The batcher's events (cloud/batcher.py BatchObserver), kept to time the gaps."""

    arrivals: list[float] = field(default_factory=list)
    launches: list[float] = field(default_factory=list)
    releases: list[float] = field(default_factory=list)

    def arrived(self, at: float) -> None:
        self.arrivals.append(at)

    def launched(self, at: float) -> None:
        self.launches.append(at)

    def released(self, at: float) -> None:
        self.releases.append(at)

    def gap(self, calls: list[Call]) -> Gap | None:
        """The medians over the gaps between calls that a batch's launch separates (a prompt fed
        in pieces makes several calls of one batch: no gap to time between those)."""
        stages = [s for pair in itertools.pairwise(calls) if (s := self._stages(*pair)) is not None]
        if not stages:
            return None
        return Gap(*(1000 * statistics.median(column) for column in zip(*stages, strict=True)))

    def _stages(self, before: Call, after: Call) -> tuple[float, ...] | None:
        end = before.started + before.seconds
        out = _first_between(self.releases, end, after.started)
        launch = _last_between(self.launches, end, after.started)
        if out is None or launch is None:
            return None
        first_in, last_in = _first_between(self.arrivals, end, launch), _last_between(self.arrivals, end, launch)
        if first_in is None or last_in is None:  # every round came during the call: none waited for
            first_in = last_in = end
        return out - end, first_in - end, last_in - end, launch - end, after.started - end


def _first_between(times: list[float], low: float, high: float) -> float | None:
    i = bisect.bisect_left(times, low)
    return times[i] if i < len(times) and times[i] <= high else None


def _last_between(times: list[float], low: float, high: float) -> float | None:
    i = bisect.bisect_right(times, high) - 1
    return times[i] if i >= 0 and times[i] >= low else None


@dataclass
class TimedEngine:
    """The engine, each forward call timed up to its logits being ready: on a GPU by CUDA events,
    so the call returns as soon as the GPU has it, as it does untimed (the batcher goes on then)."""

    engine: StaticEngine | SimulatedGPU
    calls: list[Call] = field(default_factory=list)
    _events: list[tuple[int, torch.cuda.Event, torch.cuda.Event]] = field(default_factory=list)  # calls to settle

    def __getattr__(self, name: str) -> object:
        return getattr(self.engine, name)

    def forward_many(self, works: list[Work]) -> list[torch.Tensor]:
        started = time.monotonic()  # the batcher's clock
        prefills = sum(map(is_prefill, works))
        if self.engine.device.type != "cuda":
            logits = self.engine.forward_many(works)
            self.calls.append(Call(started, time.monotonic() - started, len(works), prefills))
            return logits
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        logits = self.engine.forward_many(works)
        end.record()
        self._events.append((len(self.calls), begin, end))
        self.calls.append(Call(started, 0.0, len(works), prefills))  # its time once settled
        return logits

    def forward(self, session: object, tokens: list[int], n_logits: int) -> torch.Tensor:
        return self.forward_many([Work(session, tokens, n_logits)])[0]  # type: ignore[arg-type]

    def mark(self) -> tuple[int, int, float]:
        """Where a phase starts: calls, graphs and capture seconds so far."""
        graphs = self.engine.graphs
        return len(self.calls), len(graphs or []), graphs.capture_seconds if graphs else 0.0

    def _captured_since(self, count: int) -> list[str]:
        return [str(key) for key in list(self.engine.graphs or [])[count:]]  # in the order captured

    def tally(self, since: tuple[int, int, float], seconds: float, clock: BatchClock) -> Tally:
        self._settle()
        first_call, graphs, capture_s = since
        *_, capture_now = self.mark()
        calls = self.calls[first_call:]
        return Tally.of(calls, seconds, (self._captured_since(graphs), capture_now - capture_s), clock.gap(calls))

    def _settle(self) -> None:
        """Each GPU call's time, from its events."""
        for index, begin, end in self._events:
            end.synchronize()
            self.calls[index] = replace(self.calls[index], seconds=begin.elapsed_time(end) / 1000)
        self._events.clear()
