"""The per-request loop in each mode. Spec mode's rounds live in edge/speculation.py; the
controller that picks their draft length (one per edge, learning from every request) in
edge/controller.py.

Spec and cloud modes run through the cloud; when the link drops, the request follows its loss
policy and, once the link is back, re-opens its session with the full context so far, so the
output continues exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncGenerator

import msgspec

from edgespec.config import AUTO, MAX_SEED, EdgePolicy, LossPolicy, Mode, SamplingParams
from edgespec.edge.controller import SpecController
from edgespec.edge.drafter import Drafter
from edgespec.edge.request import Chunk, Decoding, Generation, GenerationRequest
from edgespec.edge.speculation import Plan, SpeculationLoop
from edgespec.edge.stopping import StopChecker
from edgespec.engine.base import Engine
from edgespec.engine.tokenizer import TokenizerInfo
from edgespec.engine.worker import ModelWorker
from edgespec.metrics.observer import NullObserver, RuntimeObserver
from edgespec.metrics.stats import SpecStats
from edgespec.transport.client import CloudLink, LinkError, RemoteSession
from edgespec.transport.resilient import CloudLinks


class CloudUnavailable(Exception):
    """The cloud link is down and the loss policy (fail, or wait that timed out) gives up."""


class EdgeRuntime:
    """The edge of one process: a draft model and (for spec and cloud modes) a cloud link."""

    def __init__(
        self,
        engine: Engine,
        tokenizer: TokenizerInfo,
        links: CloudLinks | None,
        policy: EdgePolicy = EdgePolicy(),
        observer: RuntimeObserver | None = None,
        owns_engine: bool = True,  # False: the engine outlives this runtime (a benchmark reusing it)
    ) -> None:
        self.drafter = Drafter(engine, policy.spec.draft_support)
        self.controller = SpecController(policy.spec.max_adaptive_k, start_k=policy.spec.num_speculative_tokens)
        self.owns_engine = owns_engine
        self.engine = engine
        self.links = links
        self.policy = policy
        self.observer: RuntimeObserver = observer or NullObserver()
        self.tokenizer = tokenizer
        self.worker = ModelWorker("draft")

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """The target's end-of-sequence ids once known, else the draft's (the tokenizer is shared)."""
        welcome = self.links.welcome if self.links is not None else None
        return tuple(welcome.eos_token_ids) if welcome is not None else self.tokenizer.eos_token_ids

    @property
    def max_context(self) -> int:
        """Prompt plus output tokens a request may span: the cloud's limit once known, else the draft's."""
        welcome = self.links.welcome if self.links is not None else None
        return min(
            self.engine.max_context, welcome.limits.max_context if welcome is not None else self.engine.max_context
        )

    def render_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """Prompt ids for a chat, with the target's template once known (both sides must agree)."""
        welcome = self.links.welcome if self.links is not None else None
        return self.tokenizer.render_chat(messages, welcome.chat_template if welcome is not None else None)

    def generate(self, request: GenerationRequest) -> Generation:
        mode = request.mode or self.policy.default_mode
        if mode is not Mode.EDGE and self.links is None:
            raise LinkError(f"{mode.value} mode needs a cloud link, and this edge has none")
        generation = Generation(request, mode, SpecStats(mode=mode.value))
        generation._chunks = self._run(generation, _with_seed(request.sampling))
        return generation

    async def aclose(self) -> None:
        if self.links is not None:
            await self.links.close()
        self.worker.shutdown(last=self.engine.close if self.owns_engine else None)

    async def _run(self, generation: Generation, sampling: SamplingParams) -> AsyncGenerator[Chunk, None]:
        request, stats = generation.request, generation.stats
        stop = StopChecker(self.eos_token_ids, request.max_tokens, request.ignore_eos, request.stop_token_ids)
        state = Decoding(generation, sampling, stop, self.engine.new_session(), list(request.prompt))
        started = last = time.perf_counter()
        try:
            # aclosing: stopping early must still run the decoder's cleanup (Close, KV release) now
            async with contextlib.aclosing(self._decoder(state)) as chunks:
                async for chunk in chunks:
                    kept, generation.finish_reason = stop.admit(chunk.tokens)
                    if kept:
                        now = time.perf_counter()
                        self._observe_tokens(generation, len(kept), now - started, now - last)
                        last = now
                        yield self._commit(generation, chunk, kept)
                    if generation.finish_reason is not None:
                        break
        finally:
            self.worker.submit(self.engine.release, state.kv)  # synchronous: safe in a cancelled task
            stats.wall_s = time.perf_counter() - started
            reason = generation.finish_reason.value if generation.finish_reason else "abort"
            self.observer.request_done(stats, reason)

    def _observe_tokens(self, generation: Generation, count: int, since_start_s: float, gap_s: float) -> None:
        if not generation.tokens:
            generation.stats.ttft_s = since_start_s
            self.observer.first_token(since_start_s)
        else:
            self.observer.tokens(count, gap_s)

    @staticmethod
    def _commit(generation: Generation, chunk: Chunk, kept: list[int]) -> Chunk:
        logprobs = chunk.logprobs[: len(kept)] if chunk.logprobs is not None else None
        generation.tokens += kept
        generation.logprobs += logprobs or []
        generation.stats.output_tokens = len(generation.tokens)
        return Chunk(kept, logprobs, chunk.fallback)

    async def _decoder(self, state: Decoding) -> AsyncGenerator[Chunk, None]:
        """The chunks of the request's mode, before stop conditions are applied; each one is
        appended to the context here, so every loop below sees everything committed so far."""
        chunks = self._draft_alone(state) if state.generation.mode is Mode.EDGE else self._through_cloud(state)
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                state.context += chunk.tokens
                yield chunk

    async def _draft_alone(self, state: Decoding) -> AsyncGenerator[Chunk, None]:
        while True:
            yield await self._draft_token(state, fallback=False)

    async def _through_cloud(self, state: Decoding) -> AsyncGenerator[Chunk, None]:
        """Spec, cloud or co-located mode, riding out link losses by the loss policy."""
        stats = state.stats
        while True:
            link = await self._usable_link()
            if link is None:  # the draft policy, while the link is down
                stats.fallback_tokens += 1
                self.observer.fallback_tokens(1)
                yield await self._draft_token(state, fallback=True)
                continue
            session = link.session()
            try:
                async for chunk in self._cloud_chunks(state, session):
                    yield chunk
                return  # a stream the cloud decoded has ended
            except LinkError:
                stats.link_losses += 1  # the next pass re-opens with the full context
            finally:
                session.close()
                stats.bytes_up += session.bytes_up
                stats.bytes_down += session.bytes_down

    async def _usable_link(self) -> CloudLink | None:
        """The link, or what the loss policy says while it is down (None: draft alone)."""
        assert self.links is not None
        link = self.links.pick()
        if link is not None:
            return link
        match self.policy.on_cloud_loss:
            case LossPolicy.DRAFT:
                return None
            case LossPolicy.FAIL:
                raise CloudUnavailable(f"the cloud at {self.links.address} is unreachable: {self.links.last_error}")
            case LossPolicy.WAIT:
                link = await self.links.wait_up(self.policy.cloud_wait_timeout_s)
                if link is None:
                    raise CloudUnavailable(
                        f"the cloud at {self.links.address} did not come back within "
                        f"{self.policy.cloud_wait_timeout_s:g} s: {self.links.last_error}"
                    )
                return link

    def _cloud_chunks(self, state: Decoding, session: RemoteSession) -> AsyncGenerator[Chunk, None]:
        if state.generation.mode is Mode.SPEC:
            return self._speculate(state, session)
        return self._cloud_decode(state, session)

    def _speculate(self, state: Decoding, session: RemoteSession) -> AsyncGenerator[Chunk, None]:
        request, spec = state.request, self.policy.spec
        k = spec.num_speculative_tokens if request.num_speculative_tokens is None else request.num_speculative_tokens
        adaptive = k == AUTO or (request.num_speculative_tokens is None and spec.adaptive)
        plan = Plan(
            k=None if adaptive else int(k),
            pipeline=spec.pipeline if request.pipeline is None else request.pipeline,
            max_k=session.link.welcome.limits.max_k,
        )
        loop = SpeculationLoop(state, session, plan, self.drafter, self.worker, self.controller, self.observer)
        return loop.chunks()

    async def _cloud_decode(self, state: Decoding, session: RemoteSession) -> AsyncGenerator[Chunk, None]:
        """Cloud or co-located mode: the cloud streams what it decodes or speculates on its own."""
        request, stats = state.request, state.stats
        colocated_k = self._colocated_k(request) if state.generation.mode is Mode.COLOCATED else None
        stream = session.stream(
            state.context, state.sampling, state.stop.remaining, request.ignore_eos, request.logprobs, colocated_k
        )
        async for message in stream:
            # cloud mode: one forward per token; co-located: one verify per frame
            stats.target_forwards += 1 if colocated_k is not None else len(message.tokens)
            yield Chunk(message.tokens, message.logprobs)

    def _colocated_k(self, request: GenerationRequest) -> int:
        """Co-located mode speculates in the cloud with a fixed k: the request's, else the edge's."""
        k = request.num_speculative_tokens
        return self.policy.spec.num_speculative_tokens if k is None or k == AUTO else int(k)

    async def _draft_token(self, state: Decoding, fallback: bool) -> Chunk:
        started = time.perf_counter()
        scored = await self.worker.run(
            self.drafter.next_token, state.kv, state.context, state.sampling, state.seed, state.request.logprobs
        )
        state.stats.draft_s += time.perf_counter() - started
        logprobs = None if scored.logprobs is None else [scored.logprobs]
        return Chunk([scored.token], logprobs, fallback)


def _with_seed(sampling: SamplingParams) -> SamplingParams:
    """Every request gets a seed, so both sides draw from the same reproducible streams."""
    if sampling.seed is not None:
        return sampling
    return msgspec.structs.replace(sampling, seed=secrets.randbelow(MAX_SEED))
