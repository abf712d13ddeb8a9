"""A request on the edge: what was asked, what it has produced, and its state while it decodes."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

from edgespec.config import AUTO, Mode, SamplingParams
from edgespec.edge.stopping import FinishReason, StopChecker
from edgespec.engine.base import KVSession
from edgespec.metrics.stats import SpecStats
from edgespec.protocol.messages import TokenLogprobs


@dataclass(frozen=True)
class GenerationRequest:
    prompt: list[int]
    max_tokens: int
    sampling: SamplingParams = SamplingParams()
    mode: Mode | None = None  # None: the runtime's default mode
    num_speculative_tokens: int | Literal["auto"] | None = None  # None: the runtime's; "auto": the controller's
    pipeline: bool | None = None  # draft the next block while this one is verified; None: the runtime's
    ignore_eos: bool = False
    stop_token_ids: tuple[int, ...] = ()
    logprobs: int | None = None  # report this many top tokens per output token (target's in spec/cloud mode)

    def __post_init__(self) -> None:
        if not self.prompt:
            raise ValueError("the prompt is empty")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")
        k = self.num_speculative_tokens
        if (isinstance(k, str) and k != AUTO) or (isinstance(k, int) and not 0 <= k <= 64):
            raise ValueError(f"num_speculative_tokens must be in [0, 64] or 'auto', got {k!r}")
        if self.logprobs is not None and self.logprobs < 0:
            raise ValueError(f"logprobs must not be negative, got {self.logprobs}")


@dataclass(frozen=True)
class Chunk:
    """Tokens committed together (one speculative round delivers several)."""

    tokens: list[int]
    logprobs: list[TokenLogprobs] | None = None  # one per token, when the request asked
    fallback: bool = False  # drafted alone while the cloud was away: not the target's output


@dataclass
class Generation:
    """A running request: iterate it for chunks; afterwards it holds the whole result."""

    request: GenerationRequest
    mode: Mode
    stats: SpecStats
    tokens: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprobs] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    _chunks: AsyncGenerator[Chunk, None] | None = None

    def __aiter__(self) -> AsyncIterator[Chunk]:
        assert self._chunks is not None
        return self._chunks

    async def collect(self) -> list[int]:
        async for _ in self:
            pass
        return self.tokens

    async def aclose(self) -> None:
        """Stop early; frees the cloud session and the draft's KV."""
        assert self._chunks is not None
        await self._chunks.aclose()


@dataclass
class Decoding:
    """One request's state while it decodes, shared by the loops of its mode."""

    generation: Generation
    sampling: SamplingParams  # with a seed: both sides draw from the same streams
    stop: StopChecker
    kv: KVSession  # the draft's cache
    context: list[int]  # the prompt, then every committed token (fallback tokens too)

    @property
    def request(self) -> GenerationRequest:
        return self.generation.request

    @property
    def stats(self) -> SpecStats:
        return self.generation.stats

    @property
    def seed(self) -> int:
        assert self.sampling.seed is not None
        return self.sampling.seed
