"""CUDA graphs of the verify step and of prompts, one per padded shape, captured ahead or on first
use. A graph replays the step's hundreds of kernels with one launch, which at batch 1 is most of
the gap between eager PyTorch and the memory-bandwidth floor. A step's inputs travel as one packed
row of integers (slots, first positions, tokens) from pinned memory in one asynchronous copy, and
the graph unpacks them itself; the KV cache is the engine's, at fixed addresses. All graphs share
one memory pool: they never run at once (one worker thread drives the target)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from edgespec.engine.static_kv import StaticKV

# (kv, slots [B], tokens [B, q], positions [B, q], span, n_logits, ends [B] or None)
#   -> logits [B, n_logits, vocab] of the n_logits rows before each session's end (q when None)
Step = Callable[[StaticKV, torch.Tensor, torch.Tensor, torch.Tensor, int, int, torch.Tensor | None], torch.Tensor]

PROMPT_LOGIT_ROWS = 16  # a prompt's graph gives logits for this many rows before its end


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
    # Prompts padded to new_tokens: how many of each session's rows are real travels with the
    # inputs, and the logits are those of the PROMPT_LOGIT_ROWS rows before the padding.
    padded: bool = False

    def __str__(self) -> str:
        if self.padded:
            return f"prompt of {self.new_tokens}"
        return f"{self.batch} sessions x {self.new_tokens} tokens"


def pack(slots: list[int], starts: list[int], tokens: list[list[int]], ends: list[int] | None = None) -> torch.Tensor:
    """A step's inputs as the one pinned row a graph takes: slots, first positions, the real
    lengths of padded prompts, tokens."""
    flat = [*slots, *starts, *(ends or []), *(token for row in tokens for token in row)]
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

    def __iter__(self) -> Iterator[GraphKey]:
        return iter(self._graphs)

    def __contains__(self, key: object) -> bool:
        return key in self._graphs

    def run(self, key: GraphKey, packed: torch.Tensor) -> torch.Tensor:
        """Logits [batch, new_tokens, vocab] (PROMPT_LOGIT_ROWS rows for a padded key) for packed
        inputs (pack()) of exactly the key's shape."""
        captured = self.ready(key)
        # pinned memory, so the copy is queued without waiting; the caching host allocator keeps
        # the row alive until the copy has run
        captured.inputs.copy_(packed, non_blocking=True)
        captured.graph.replay()
        return captured.logits

    def _unpacked_step(self, key: GraphKey, inputs: torch.Tensor) -> torch.Tensor:
        batch, q = key.batch, key.new_tokens
        slots, starts = inputs[:batch], inputs[batch : 2 * batch]
        ends = inputs[2 * batch : 3 * batch] if key.padded else None
        tokens = inputs[(3 if key.padded else 2) * batch :].view(batch, q)
        positions = starts[:, None] + torch.arange(q, device=inputs.device)
        return self.step(self.kv, slots, tokens, positions, key.span, PROMPT_LOGIT_ROWS if key.padded else q, ends)

    def ready(self, key: GraphKey) -> _Captured:
        """The key's graph, captured now if it has not been."""
        if key in self._graphs:
            return self._graphs[key]
        started = time.perf_counter()
        captured = self._capture(key)
        self.capture_seconds += time.perf_counter() - started
        return captured

    def compile(self, key: GraphKey) -> None:
        """Run the key's step once, eagerly and uncaptured: every kernel it launches is compiled
        for its shape, so capturing its graph later costs a capture only (0.05–0.1 s on an H100 for
        Qwen3-8B's shape, against ~0.5 s with a compile), and holds no memory until then."""
        self._unpacked_step(key, self._scratch_inputs(key))

    def _scratch_inputs(self, key: GraphKey) -> torch.Tensor:
        """Inputs that write keys and values only into the scratch slot's positions past the
        context, so no session's cache is touched."""
        batch, q = key.batch, key.new_tokens
        ends = [q] * batch if key.padded else None
        scratch = pack([self.scratch_slot] * batch, [self.kv.max_len - q] * batch, [[0] * q] * batch, ends)
        return scratch.to(self.kv.keys[0].device)

    def _capture(self, key: GraphKey) -> _Captured:
        """Warm up, then record the step, on scratch inputs."""
        device = self.kv.keys[0].device
        inputs = self._scratch_inputs(key)
        # torch.cuda.graph's own capture stream is made once per process, on whichever GPU was
        # current then: a graph of an engine on another GPU would capture nothing
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self._unpacked_step(key, inputs)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool, stream=side):
            logits = self._unpacked_step(key, inputs)
        self._graphs[key] = _Captured(graph, inputs, logits)
        return self._graphs[key]
