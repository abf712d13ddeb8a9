"""Where a capacity phase's GPU time went: the cloud's engine with every batched forward call
counted and timed to its results. A call that prefills a session's prompt is told apart from a
call of rounds alone, because openings, not rounds, are what speculation cannot make cheaper."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from edgespec.engine.base import Work
from edgespec.engine.static_engine import StaticEngine, is_prefill

if TYPE_CHECKING:
    from edgespec.bench.simulated_gpu import SimulatedGPU


@dataclass(frozen=True)
class Call:
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
    graphs_captured: int  # new CUDA graph shapes met (each a stall)
    capture_s: float  # seconds those captures took

    @classmethod
    def of(cls, calls: list[Call], seconds: float, graphs: tuple[int, float]) -> Tally:
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
        )


@dataclass
class TimedEngine:
    """The engine, each forward call timed up to its logits being ready. The cloud reads the
    verdicts from the GPU right after every call, so waiting for them here adds no stall."""

    engine: StaticEngine | SimulatedGPU
    calls: list[Call] = field(default_factory=list)

    def __getattr__(self, name: str) -> object:
        return getattr(self.engine, name)

    def forward_many(self, works: list[Work]) -> list[torch.Tensor]:
        started = time.perf_counter()
        logits = self.engine.forward_many(works)
        if self.engine.device.type == "cuda":
            torch.cuda.synchronize(self.engine.device)
        prefills = sum(map(is_prefill, works))
        self.calls.append(Call(time.perf_counter() - started, len(works), prefills))
        return logits

    def forward(self, session: object, tokens: list[int], n_logits: int) -> torch.Tensor:
        return self.forward_many([Work(session, tokens, n_logits)])[0]  # type: ignore[arg-type]

    def mark(self) -> tuple[int, int, float]:
        """Where a phase starts: calls, graphs and capture seconds so far."""
        graphs = self.engine.graphs
        return len(self.calls), len(graphs or []), graphs.capture_seconds if graphs else 0.0

    def tally(self, since: tuple[int, int, float], seconds: float) -> Tally:
        first_call, graphs, capture_s = since
        _, graphs_now, capture_now = self.mark()
        return Tally.of(self.calls[first_call:], seconds, (graphs_now - graphs, capture_now - capture_s))
