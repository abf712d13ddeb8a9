"""The per-request loop in its three modes. Spec mode reads like the algorithm:
draft → send → await verdict → commit → (the next draft truncates the draft's KV) → observe."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field

import msgspec

from edgespec.config import MAX_SEED, Mode, SamplingParams, SpecConfig
from edgespec.edge.drafter import Drafter
from edgespec.edge.stopping import FinishReason, StopChecker
from edgespec.engine.base import Engine
from edgespec.engine.worker import ModelWorker
from edgespec.metrics.stats import SpecStats
from edgespec.protocol.messages import MICROSECONDS_PER_SECOND
from edgespec.transport.client import CloudLink, LinkError, RemoteSession


@dataclass(frozen=True)
class GenerationRequest:
    prompt: list[int]
    max_tokens: int
    sampling: SamplingParams = SamplingParams()
    mode: Mode | None = None  # None: the runtime's default mode
    num_speculative_tokens: int | None = None  # None: the runtime's configured k
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if not self.prompt:
            raise ValueError("the prompt is empty")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.num_speculative_tokens is not None and not 0 <= self.num_speculative_tokens <= 64:
            raise ValueError(f"num_speculative_tokens must be in [0, 64], got {self.num_speculative_tokens}")


@dataclass
class Generation:
    """A running request: iterate it for token chunks; afterwards it holds the whole result."""

    request: GenerationRequest
    mode: Mode
    stats: SpecStats
    tokens: list[int] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    _chunks: AsyncIterator[list[int]] | None = None

    def __aiter__(self) -> AsyncIterator[list[int]]:
        assert self._chunks is not None
        return self._chunks

    async def collect(self) -> list[int]:
        async for _ in self:
            pass
        return self.tokens


class EdgeRuntime:
    """The edge of one process: a draft model and (for spec and cloud modes) a cloud link."""

    def __init__(
        self,
        engine: Engine,
        eos_token_ids: tuple[int, ...],
        link: CloudLink | None,
        spec: SpecConfig = SpecConfig(),
        default_mode: Mode = Mode.SPEC,
    ) -> None:
        self.drafter = Drafter(engine, spec.draft_support)
        self.engine = engine
        self.link = link
        self.spec = spec
        self.default_mode = default_mode
        self.worker = ModelWorker("draft")
        self._eos = tuple(link.welcome.eos_token_ids) if link is not None else eos_token_ids

    def generate(self, request: GenerationRequest) -> Generation:
        mode = request.mode or self.default_mode
        if mode is not Mode.EDGE and self.link is None:
            raise LinkError(f"{mode.value} mode needs a cloud link, and this edge has none")
        generation = Generation(request, mode, SpecStats(mode=mode.value))
        generation._chunks = self._run(generation, _with_seed(request.sampling))
        return generation

    def close(self) -> None:
        self.worker.shutdown()

    async def _run(self, generation: Generation, sampling: SamplingParams) -> AsyncIterator[list[int]]:
        request, stats = generation.request, generation.stats
        stop = StopChecker(self._eos, request.max_tokens, request.ignore_eos)
        started = time.perf_counter()
        # aclosing: stopping early must still run the decoder's cleanup (Close, KV release) now
        async with contextlib.aclosing(self._decoder(generation, sampling, stop)) as chunks:
            async for produced in chunks:
                kept, generation.finish_reason = stop.admit(produced)
                if kept:
                    if not generation.tokens:
                        stats.ttft_s = time.perf_counter() - started
                    generation.tokens += kept
                    stats.output_tokens = len(generation.tokens)
                    yield kept
                if generation.finish_reason is not None:
                    break
        stats.wall_s = time.perf_counter() - started

    def _decoder(
        self, generation: Generation, sampling: SamplingParams, stop: StopChecker
    ) -> AsyncGenerator[list[int], None]:
        """The token chunks of the request's mode, before stop conditions are applied."""
        match generation.mode:
            case Mode.SPEC:
                return self._speculate(generation, sampling, stop)
            case Mode.CLOUD:
                return self._cloud_decode(generation, sampling)
            case Mode.EDGE:
                return self._edge_decode(generation, sampling)

    async def _speculate(
        self, generation: Generation, sampling: SamplingParams, stop: StopChecker
    ) -> AsyncGenerator[list[int], None]:
        request, stats = generation.request, generation.stats
        assert self.link is not None and sampling.seed is not None
        k_wanted = (
            self.spec.num_speculative_tokens
            if request.num_speculative_tokens is None
            else request.num_speculative_tokens
        )
        session = self.link.session()
        kv = self.engine.new_session()
        committed = list(request.prompt)
        try:
            while True:
                k = min(k_wanted, stop.remaining - 1, self.link.welcome.limits.max_k)
                drafted_at = time.perf_counter()
                draft = await self.worker.run(self.drafter.propose, kv, committed, k, sampling, sampling.seed)
                sent_at = time.perf_counter()
                stats.draft_s += sent_at - drafted_at
                if len(committed) == len(request.prompt):
                    verdict = await session.first_round(committed, sampling, request.max_tokens, draft)
                else:
                    verdict = await session.round(len(committed), draft)
                stats.record_round(
                    k, verdict.accepted, time.perf_counter() - sent_at, verdict.verify_us / MICROSECONDS_PER_SECOND
                )
                produced = [*draft.tokens[: verdict.accepted], verdict.token]
                committed += produced
                _count_bytes(stats, session)
                yield produced
        finally:
            await session.close()
            _count_bytes(stats, session)
            await self.worker.run(self.engine.release, kv)

    async def _cloud_decode(self, generation: Generation, sampling: SamplingParams) -> AsyncGenerator[list[int], None]:
        request, stats = generation.request, generation.stats
        assert self.link is not None
        session = self.link.session()
        try:
            stream = session.stream(request.prompt, sampling, request.max_tokens, request.ignore_eos)
            async for tokens in stream:
                stats.target_forwards += len(tokens)
                yield tokens
        finally:
            await session.close()
            _count_bytes(stats, session)

    async def _edge_decode(self, generation: Generation, sampling: SamplingParams) -> AsyncGenerator[list[int], None]:
        assert sampling.seed is not None
        kv = self.engine.new_session()
        committed = list(generation.request.prompt)
        try:
            while True:
                started = time.perf_counter()
                token = await self.worker.run(self.drafter.next_token, kv, committed, sampling, sampling.seed)
                generation.stats.draft_s += time.perf_counter() - started
                committed.append(token)
                yield [token]
        finally:
            await self.worker.run(self.engine.release, kv)


def _with_seed(sampling: SamplingParams) -> SamplingParams:
    """Every request gets a seed, so both sides draw from the same reproducible streams."""
    if sampling.seed is not None:
        return sampling
    return msgspec.structs.replace(sampling, seed=secrets.randbelow(MAX_SEED))


def _count_bytes(stats: SpecStats, session: RemoteSession) -> None:
    stats.bytes_up, stats.bytes_down = session.bytes_up, session.bytes_down
