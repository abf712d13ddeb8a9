"""A stand-in for the GPU in `bench capacity --simulate`: each forward call sleeps as long as a
cost model says (a base per call, more per session in it, more per prompt it prefills) and returns
flat logits. Everything else is real: the cloud with its batching and event loop, the processes
playing the edges, the wire. It shows how the serving side shapes capacity for a step time of
one's choosing, on any machine (with the costs an H200 measured it reproduced that card's figures
to a few percent: docs/gpu-verifier.md)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from edgespec.bench.protocol_overhead import InstantEngine
from edgespec.engine.base import Work
from edgespec.engine.static_engine import GRAPH_MAX_TOKENS, is_prefill

VOCAB = 2048  # past the bench's tokens (capacity.TOKENS); flat logits, so their size only costs the argmax


@dataclass(frozen=True)
class StepCosts:
    call_s: float
    per_session_s: float
    per_prefill_s: float

    @classmethod
    def parse(cls, text: str) -> StepCosts:
        """From 'CALL,SESSION,PREFILL' in milliseconds, e.g. '6.2,0.035,10'."""
        try:
            call, session, prefill = (float(part) / 1000 for part in text.split(","))
        except ValueError:
            wanted = "three numbers of milliseconds, CALL,SESSION,PREFILL"
            raise ValueError(f"--simulate takes {wanted}; got {text!r}") from None
        if min(call, session, prefill) < 0:
            raise ValueError(f"--simulate costs cannot be negative; got {text!r}")
        return cls(call, session, prefill)

    def of(self, works: list[Work]) -> float:
        prefills = sum(map(is_prefill, works))
        return self.call_s + self.per_session_s * len(works) + self.per_prefill_s * prefills


class SimulatedGPU(InstantEngine):
    numerics = "simulated GPU: flat logits"
    graphs = None  # nothing to capture

    def __init__(self, costs: StepCosts, max_sessions: int, max_context: int) -> None:
        super().__init__(VOCAB)
        self.costs = costs
        self.max_sessions = max_sessions
        self.max_context = max_context
        self.batch_tokens = max_sessions * GRAPH_MAX_TOKENS  # as the static engine takes them
        self._closed = False

    def forward_many(self, works: list[Work]) -> list[torch.Tensor]:
        if self._closed:  # as the static engine refuses: a bench must not measure a closed engine
            raise RuntimeError("the engine is closed")
        time.sleep(self.costs.of(works))  # releases the GIL, as waiting on a GPU does
        return super().forward_many(works)

    def close(self) -> None:
        self._closed = True
