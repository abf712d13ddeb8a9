"""CUDA graphs of the verify step, one per padded shape, captured on first use. A graph replays
the step's hundreds of kernels with one launch, which at batch 1 is most of the gap between
eager PyTorch and the memory-bandwidth floor. A step's inputs travel as one packed row of
integers (slots, first positions, tokens) from pinned memory in one asynchronous copy, and the
graph unpacks them itself; the KV cache is the engine's, at fixed addresses. All graphs share one
memory pool: they never run at once (one worker thread drives the target)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from edgespec.engine.static_kv import StaticKV

# (kv, slots [B], tokens [B, q], positions [B, q], span, n_logits) -> logits [B, n_logits, vocab]
Step = Callable[[StaticKV, torch.Tensor, torch.Tensor, torch.Tensor, int, int], torch.Tensor]


def bucket(n: int, smallest: int) -> int:
    """The power of two at or above n (at least `smallest`)."""
    size = smallest
    while size < n:
        size *= 2
    return size


@dataclass(frozen=True)
class GraphKey:
    batch: int
    new_tokens: int
    span: int


def pack(slots: list[int], starts: list[int], tokens: list[list[int]]) -> torch.Tensor:
    """A step's inputs as the one pinned row a graph takes: slots, first positions, tokens."""
    flat = [*slots, *starts, *(token for row in tokens for token in row)]
    return torch.tensor(flat, dtype=torch.long).pin_memory()


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    inputs: torch.Tensor  # the packed row, on the GPU
    logits: torch.Tensor


class VerifyGraphs:
    def __init__(self, step: Step, kv: StaticKV, scratch_slot: int) -> None:
        self.step = step
        self.kv = kv
        self.scratch_slot = scratch_slot
        self._graphs: dict[GraphKey, _Captured] = {}
        self._pool = torch.cuda.graph_pool_handle()
        self.capture_seconds = 0.0  # spent capturing so far: a stall for every session waiting

    def __len__(self) -> int:
        return len(self._graphs)

    def run(self, key: GraphKey, packed: torch.Tensor) -> torch.Tensor:
        """Logits [batch, new_tokens, vocab] for packed inputs (pack()) of exactly the key's shape."""
        captured = self.ready(key)
        # pinned memory, so the copy is queued without waiting; the caching host allocator keeps
        # the row alive until the copy has run
        captured.inputs.copy_(packed, non_blocking=True)
        captured.graph.replay()
        return captured.logits

    def _unpacked_step(self, key: GraphKey, inputs: torch.Tensor) -> torch.Tensor:
        batch, q = key.batch, key.new_tokens
        slots, starts, tokens = inputs[:batch], inputs[batch : 2 * batch], inputs[2 * batch :].view(batch, q)
        positions = starts[:, None] + torch.arange(q, device=inputs.device)
        return self.step(self.kv, slots, tokens, positions, key.span, q)

    def ready(self, key: GraphKey) -> _Captured:
        """The key's graph, captured now if it has not been."""
        if key in self._graphs:
            return self._graphs[key]
        started = time.perf_counter()
        captured = self._capture(key)
        self.capture_seconds += time.perf_counter() - started
        return captured

    def _capture(self, key: GraphKey) -> _Captured:
        """Warm up, then record the step. Both write keys and values only into the scratch slot's
        positions past the context, so no session's cache is touched."""
        first_scratch = self.kv.max_len - key.new_tokens
        scratch = pack([self.scratch_slot] * key.batch, [first_scratch] * key.batch, [[0] * key.new_tokens] * key.batch)
        inputs = scratch.to(self.kv.keys[0].device)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._unpacked_step(key, inputs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            logits = self._unpacked_step(key, inputs)
        self._graphs[key] = _Captured(graph, inputs, logits)
        return self._graphs[key]
