"""Spec mode on one cloud session. Each exchange is a round (draft → send → verdict → commit) or,
when the controller finds the link too slow for rounds, a burst the cloud decodes on its own.

With pipelined drafting the edge does not sit idle while a block is in flight: it keeps drafting
as if the block will be accepted in full, guessing the cloud's own token with the draft model. If
the verdict confirms the guess, the next block is already drafted and goes out at once; otherwise
the guess is dropped (the next draft truncates the draft's KV to the committed tokens). The output
is the target's either way: pipelining only decides which block is proposed when, and a block
drafted ahead is exactly the block the draft would have proposed after the verdict (same context,
same position-keyed random streams).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Coroutine
from dataclasses import dataclass, field
from typing import Any

from edgespec.edge.controller import SpecController, Step
from edgespec.edge.drafter import Drafter
from edgespec.edge.read_along import ReadAlong
from edgespec.edge.request import Chunk, Decoding
from edgespec.engine.worker import ModelWorker
from edgespec.metrics.observer import RuntimeObserver
from edgespec.protocol.messages import MICROSECONDS_PER_SECOND, Draft, SparseDist, Verdict
from edgespec.transport.client import RemoteSession

ROUND_CATCH_UP = 2  # tokens a round's first draft pass absorbs at most (the last drafted, the cloud's own)


@dataclass(frozen=True)
class Plan:
    """How one request speculates: a fixed draft length, or the controller's choice each round."""

    k: int | None  # None: the controller decides
    pipeline: bool
    max_k: int  # the cloud's limit


@dataclass
class Lookahead:
    """Tokens drafted past a block in flight, on the hypothesis that the block is accepted in full
    and the cloud's own token is `tokens[0]`."""

    greedy: bool
    tokens: list[int] = field(default_factory=list)
    q: list[SparseDist] = field(default_factory=list)

    def add(self, block: Draft) -> None:
        self.tokens += block.tokens
        self.q += block.q or []

    def confirmed_by(self, verdict: Verdict, block_len: int) -> bool:
        return verdict.accepted == block_len and bool(self.tokens) and verdict.token == self.tokens[0]

    def next_block(self, k: int) -> Draft:
        """Up to k tokens of the next block, drafted ahead (valid once confirmed)."""
        return Draft(tokens=self.tokens[1 : k + 1], q=None if self.greedy else self.q[1 : k + 1])


class SpeculationLoop:
    def __init__(
        self,
        state: Decoding,
        session: RemoteSession,
        plan: Plan,
        drafter: Drafter,
        worker: ModelWorker,
        controller: SpecController,
        observer: RuntimeObserver,
    ) -> None:
        self.state = state
        self.session = session
        self.plan = plan
        self.drafter = drafter
        self.worker = worker
        self.controller = controller
        self.observer = observer
        self.greedy = state.sampling.greedy

    async def chunks(self) -> AsyncGenerator[Chunk, None]:
        """Exchanges on the session, opened with the context so far (the prompt, or more after a loss)."""
        ahead: Lookahead | None = None
        opening = True
        while True:
            step = self._next_step()
            if step.burst:
                async for chunk in self._burst(step.burst, opening):
                    yield chunk
                ahead, opening = None, False
                continue
            draft = await self._draft(step.k, ahead)
            verdict, ahead = await self._round(draft, opening)
            opening = False
            yield Chunk([*draft.tokens[: verdict.accepted], verdict.token], verdict.logprobs)

    def _next_step(self) -> Step:
        remaining = self.state.stop.remaining
        if self.plan.k is not None:
            return Step(max(min(self.plan.k, remaining - 1, self.plan.max_k), 0))
        step = self.controller.next_step(remaining, self.plan.pipeline)
        if step.k > self.plan.max_k:
            step = Step(self.plan.max_k)
        self.observer.decision(step, self.controller.snapshot())
        return step

    # --- drafting -------------------------------------------------------------------------------

    async def _draft(self, k: int, ahead: Lookahead | None) -> Draft:
        """k drafted tokens: those drafted ahead, if the verdict confirmed them, then the rest."""
        draft = ahead.next_block(k) if ahead is not None else self._empty()
        if len(draft.tokens) < k:
            context = self.state.context + draft.tokens
            rest = await self._timed_draft(k - len(draft.tokens), context)
            draft = Draft(
                tokens=draft.tokens + rest.tokens, q=None if self.greedy else (draft.q or []) + (rest.q or [])
            )
        return draft

    async def _draft_ahead(self, block: Draft, exchange: asyncio.Future[Any]) -> Lookahead:
        """Draft one token at a time past `block` until its verdict arrives or enough is drafted:
        the guess of the cloud's token and one block after it."""
        ahead = Lookahead(self.greedy)
        wanted = min(len(block.tokens) + 1, self.state.stop.remaining - len(block.tokens) - 1)
        hypothesis = self.state.context + block.tokens
        while len(ahead.tokens) < wanted and not exchange.done():
            ahead.add(await self._timed_draft(1, hypothesis + ahead.tokens))
        return ahead

    async def _timed_draft(self, k: int, context: list[int]) -> Draft:
        """k tokens drafted after `context` (k forward passes of the draft)."""
        state = self.state
        catching_up = len(context) - len(state.kv.tokens) > ROUND_CATCH_UP  # a prompt, say: no round's cost
        started = time.perf_counter()
        draft = await self.worker.run(self.drafter.propose, state.kv, context, k, state.sampling, state.seed)
        elapsed = time.perf_counter() - started
        state.stats.draft_s += elapsed
        self.observer.draft_time(elapsed)
        if not catching_up:
            self.controller.observe_draft(k, elapsed)
        return draft

    def _empty(self) -> Draft:
        return Draft(tokens=[], q=None if self.greedy else [])

    # --- exchanges with the cloud ---------------------------------------------------------------

    async def _round(self, draft: Draft, opening: bool) -> tuple[Verdict, Lookahead | None]:
        """Send a block and wait for its verdict, drafting ahead meanwhile when pipelining."""
        sent_at = time.perf_counter()
        exchange = asyncio.ensure_future(_arrival(self._send_block(draft, opening)))
        try:
            ahead = await self._draft_ahead(draft, exchange) if self.plan.pipeline else None
            verdict, arrived_at = await exchange
        finally:
            exchange.cancel()  # only matters when this request is being stopped mid-round
        k = len(draft.tokens)
        self._record_round(k, verdict, arrived_at - sent_at, prefill=opening)
        if ahead is None or not ahead.tokens:
            return verdict, None
        confirmed = ahead.confirmed_by(verdict, k)
        self.state.stats.record_lookahead(confirmed)
        self.observer.lookahead(confirmed)
        return verdict, ahead if confirmed else None

    def _record_round(self, k: int, verdict: Verdict, network_s: float, prefill: bool) -> None:
        verify_s = verdict.verify_us / MICROSECONDS_PER_SECOND
        self.state.stats.record_round(k, verdict.accepted, network_s, verify_s)
        self.observer.round(k, verdict.accepted, network_s, verify_s)
        self.controller.observe_round(k, verdict.accepted, network_s, verify_s, prefill)

    def _send_block(self, draft: Draft, opening: bool) -> Coroutine[Any, Any, Verdict]:
        state = self.state
        if opening:
            return self.session.first_round(
                state.context, state.sampling, state.stop.remaining, draft, state.request.logprobs
            )
        return self.session.round(len(state.context), draft)

    async def _burst(self, count: int, opening: bool) -> AsyncGenerator[Chunk, None]:
        """The cloud decodes up to `count` tokens on its own and streams them. A session opens
        with a round, so an opening burst rides behind an Open with nothing drafted, sent
        together: one round trip for both."""
        state = self.state
        reader = ReadAlong(state, self.drafter, self.worker, self.controller)
        try:
            sent_at = time.perf_counter()
            if opening:
                await self.session.open_round(
                    state.context, state.sampling, state.stop.remaining, self._empty(), state.request.logprobs
                )
                count -= 1  # the Open's own token
            if count > 0:
                start = len(state.context) + (1 if opening else 0)  # after the Open's token, if any
                await self.session.request_burst(start, count, state.request.ignore_eos)
            if opening:
                verdict = await self.session.verdict()
                self._record_round(0, verdict, time.perf_counter() - sent_at, prefill=True)
                yield Chunk([verdict.token], verdict.logprobs)
            if count > 0:
                async for chunk in self._burst_tokens(None if opening else sent_at):
                    yield chunk
                    reader.tokens_arrived()  # now in the context: the consumer has taken the chunk
        finally:
            await reader.stop()

    async def _burst_tokens(self, sent_at: float | None) -> AsyncGenerator[Chunk, None]:
        """The burst's tokens as they come; their timing feeds the controller (the round trip
        only when `sent_at` is known: an opening burst's first token also waited for a prefill)."""
        first_at = last_at = 0.0
        received = 0
        async for message in self.session.burst():
            last_at = time.perf_counter()
            first_at = first_at if received else last_at
            received += len(message.tokens)
            self.state.stats.record_burst(len(message.tokens))
            yield Chunk(message.tokens, message.logprobs)
        first_token_s = None if sent_at is None else first_at - sent_at
        self.controller.observe_burst(received, first_token_s, last_at - first_at)


async def _arrival(exchange: Coroutine[Any, Any, Verdict]) -> tuple[Verdict, float]:
    """The verdict and when it arrived (not when the edge got round to reading it)."""
    verdict = await exchange
    return verdict, time.perf_counter()
