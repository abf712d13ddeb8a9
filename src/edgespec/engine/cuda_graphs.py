"""CUDA graphs of the verify step, one per padded shape, captured on first use. A graph replays
the step's hundreds of kernels with one launch, which at batch 1 is most of the gap between
eager PyTorch and the memory-bandwidth floor. Inputs are copied into the graph's own tensors
before each replay; the KV cache is the engine's, at fixed addresses. All graphs share one memory
pool: they never run at once (one worker thread drives the target)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgespec.engine.compact_model import CompactModel
from edgespec.engine.static_kv import StaticKV


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


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    slots: torch.Tensor
    tokens: torch.Tensor
    positions: torch.Tensor
    logits: torch.Tensor


class VerifyGraphs:
    def __init__(self, model: CompactModel, kv: StaticKV, scratch_slot: int, compile_steps: bool = False) -> None:
        self.model = model
        # torch.compile fuses the step's small kernels (norms, rotary, activation); each new shape
        # compiles once, which takes tens of seconds, so it is a choice, not the default
        self.step = torch.compile(model.forward, dynamic=False) if compile_steps else model.forward
        self.kv = kv
        self.scratch_slot = scratch_slot
        self._graphs: dict[GraphKey, _Captured] = {}
        self._pool = torch.cuda.graph_pool_handle()

    def __len__(self) -> int:
        return len(self._graphs)

    def run(self, key: GraphKey, slots: torch.Tensor, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Logits [batch, new_tokens, vocab] for inputs of exactly the key's shape."""
        captured = self._graphs.get(key) or self._capture(key)
        captured.slots.copy_(slots)
        captured.tokens.copy_(tokens)
        captured.positions.copy_(positions)
        captured.graph.replay()
        return captured.logits

    def _capture(self, key: GraphKey) -> _Captured:
        """Warm up, then record the step. Both write keys and values only into the scratch slot's
        positions past the context, so no session's cache is touched."""
        device = self.kv.keys[0].device
        slots = torch.full((key.batch,), self.scratch_slot, device=device)
        tokens = torch.zeros((key.batch, key.new_tokens), dtype=torch.long, device=device)
        first_scratch = self.kv.max_len - key.new_tokens
        positions = torch.arange(first_scratch, self.kv.max_len, device=device).expand(key.batch, -1).contiguous()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self.step(self.kv, slots, tokens, positions, key.span, key.new_tokens)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            logits = self.step(self.kv, slots, tokens, positions, key.span, key.new_tokens)
        self._graphs[key] = _Captured(graph, slots, tokens, positions, logits)
        return self._graphs[key]
