"""One session on the cloud, as an actor: it handles its messages in arrival order on its own task,
so a session's rounds never race each other while sessions of all edges interleave freely.

The common message, the next round of a speculating session that has nothing else to do, skips
the task: it is checked and queued for its batch as it arrives, and its verdict is sent from the
batch's results. Between one forward call and the next the cloud's loop does this for every
session while the GPU waits, so the two task wake-ups a round saves count: ~0.3 ms a batch of 32
on a GPU host (docs/gpu-verifier.md)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time

from edgespec.cloud.batcher import VerifyBatcher
from edgespec.cloud.colocated import LocalDraft
from edgespec.cloud.verifier import RoundResult, TargetSession
from edgespec.metrics.prometheus import CloudMetrics
from edgespec.protocol.codec import ProtocolError
from edgespec.protocol.messages import (
    MICROSECONDS_PER_SECOND,
    Close,
    Decode,
    Draft,
    Error,
    ErrorCode,
    Message,
    Open,
    Tokens,
    Verdict,
    Verify,
)
from edgespec.protocol.sessions import OPEN_SEQ, SessionTable
from edgespec.transport.connection import Connection, ConnectionClosed

log = logging.getLogger("edgespec.cloud")

# put in the inbox when a round started on arrival failed; never read as a Close: the task raises the failure first
_WAKE = Close(sid=0)


class SessionActor:
    def __init__(
        self,
        opening: Open,
        table: SessionTable,
        target: VerifyBatcher,  # the target model: its verifier, worker and batched rounds
        connection: Connection,  # to the session's edge
        eos_token_ids: tuple[int, ...],
        metrics: CloudMetrics,
        local_draft: LocalDraft | None = None,
    ) -> None:
        self.sid = opening.sid
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.last_active = time.monotonic()
        self._table = table
        self._batcher = target
        self._verifier = target.verifier
        self._worker = target.worker
        self._connection = connection
        self._eos = eos_token_ids
        self._metrics = metrics
        self._local_draft = local_draft
        self._target: TargetSession | None = None
        self._close_requested = False  # lets cloud-mode decoding stop between tokens
        self._waiting = False  # the task waits for a message (it holds none)
        self._round_in_flight: asyncio.Future[RoundResult] | None = None  # started on arrival
        self._failed: Exception | None = None  # what that round met, for the task to raise
        self.inbox.put_nowait(opening)

    def deliver(self, message: Message) -> None:
        self.last_active = time.monotonic()
        self._close_requested |= isinstance(message, Close)
        if isinstance(message, Verify) and self._idle():
            self._start_round(message)
        else:
            self.inbox.put_nowait(message)

    async def run(self) -> None:
        """Handle messages until Close, an error, or cancellation; always frees the KV."""
        try:
            while True:
                self._waiting = True
                message = await self.inbox.get()
                self._waiting = False
                await self._round_in_flight_done()  # it came before this message
                if self._failed is not None:
                    raise self._failed
                if isinstance(message, Close):
                    return
                await self._handle(message)
        except ProtocolError as exc:
            await self._send_error(exc.code, exc.message)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("session %d failed", self.sid)
            await self._send_error(ErrorCode.INTERNAL, "the cloud failed to process this session")
        finally:
            if self._round_in_flight is not None:  # not run yet: never; running: its result is dropped
                self._round_in_flight.cancel()
            self._table.close(self.sid)
            if self._target is not None:  # on the worker: a forward of this session may be running
                self._batcher.forget(self._target)
                self._worker.submit(self._verifier.release, self._target)
                self._target = None

    def _idle(self) -> bool:
        """Open, and nothing of this session's is being handled or waits to be."""
        return self._target is not None and self._waiting and self.inbox.empty() and self._round_in_flight is None

    def _start_round(self, message: Verify) -> None:
        """Check a round and queue it for its batch, now, on the loop, without the task."""
        assert self._target is not None
        try:
            self._table.verify(message)
        except ProtocolError as exc:
            self._fail(exc)
            return
        pending = self._batcher.submit(self._target, message.draft)
        pending.add_done_callback(functools.partial(self._round_ended, message.seq, message.draft))
        self._round_in_flight = pending

    def _round_ended(self, seq: int, draft: Draft, pending: asyncio.Future[RoundResult]) -> None:
        """Send the verdict of a round started on arrival (called by its batch's results)."""
        self._round_in_flight = None
        if pending.cancelled():  # the session ended meanwhile
            return
        try:
            self._connection.send_nowait(self._verdict(seq, draft, pending.result()))
        except ConnectionClosed:
            pass  # the edge is gone: its connection's end closes this session
        except Exception as exc:
            self._fail(exc)

    def _fail(self, error: Exception) -> None:
        """Have the task raise `error`, as if its own handling had met it."""
        self._failed = error
        self.inbox.put_nowait(_WAKE)

    async def _round_in_flight_done(self) -> None:
        if (pending := self._round_in_flight) is not None:
            with contextlib.suppress(Exception):  # _round_ended has dealt with it
                await pending

    async def _handle(self, message: Message) -> None:
        if isinstance(message, Open):
            await self._open(message)
        elif isinstance(message, Verify):
            self._table.verify(message)
            await self._round(message.seq, message.draft)
        elif isinstance(message, Decode):
            self._table.decode(message)
            produced = await self._decode_alone(message.count, message.ignore_eos)
            self._table.commit(self.sid, produced)

    async def _open(self, message: Open) -> None:
        self._target = self._verifier.open(message.prompt, message.sampling, message.logprobs)
        self._metrics.session_opened(message.cloud_decodes)
        if message.colocated_k is not None:
            await self._speculate_here(message.max_new_tokens, message.ignore_eos, message.colocated_k)
        elif message.cloud_decodes:
            if message.max_new_tokens == 0:
                await self._connection.send(Tokens(sid=self.sid, tokens=[], done=True))
            else:
                await self._decode_alone(message.max_new_tokens, message.ignore_eos)
        else:
            await self._round(OPEN_SEQ, message.draft or Draft(tokens=[]))

    async def _round(self, seq: int, draft: Draft) -> None:
        assert self._target is not None
        result = await self._batcher.verify(self._target, draft)
        await self._connection.send(self._verdict(seq, draft, result))

    def _verdict(self, seq: int, draft: Draft, result: RoundResult) -> Verdict:
        """Commit a round's result; the verdict that tells the edge."""
        self._table.commit(self.sid, result.accepted + 1)
        self._metrics.verified(len(draft.tokens), result.accepted, result.seconds)
        self.last_active = time.monotonic()
        return Verdict(
            sid=self.sid,
            seq=seq,
            accepted=result.accepted,
            token=result.token,
            verify_us=int(result.seconds * MICROSECONDS_PER_SECOND),
            logprobs=result.logprobs,
        )

    async def _decode_alone(self, count: int, ignore_eos: bool) -> int:
        """Decode and stream up to `count` (≥ 1) tokens, stopping early at EOS or a Close from
        the edge; returns how many were produced. Serves cloud mode (the whole request) and
        Decode bursts of spec mode. A decode step is a round with nothing drafted (the target's
        own token, drawn from the same stream at the same position), so these sessions are
        batched like speculating ones."""
        assert self._target is not None
        nothing = Draft(tokens=[], q=None if self._target.sampling.greedy else [])
        decided = 0

        def follows(step: RoundResult) -> bool:  # told each step's result before this task sees it
            nonlocal decided
            decided += 1
            return not self._last(decided, count, step.token, ignore_eos)

        produced, done = 0, False
        while not done:
            decoded = await self._batcher.verify(self._target, nothing, follows)
            produced += 1
            self._metrics.decoded_one(decoded.seconds)
            done = self._last(produced, count, decoded.token, ignore_eos)
            await self._connection.send(
                Tokens(sid=self.sid, tokens=[decoded.token], done=done, logprobs=decoded.logprobs)
            )
            self.last_active = time.monotonic()
        return produced

    def _last(self, produced: int, count: int, token: int, ignore_eos: bool) -> bool:
        """Whether decoding stops after this token: the count is reached, the sequence ended, or
        the edge asked to close."""
        return produced == count or (token in self._eos and not ignore_eos) or self._close_requested

    async def _speculate_here(self, max_new_tokens: int, ignore_eos: bool, k: int) -> None:
        """Co-located mode: draft and verify in this process; stream each round's tokens."""
        assert self._target is not None and self._local_draft is not None
        kv = self._local_draft.new_session()
        produced = 0
        try:
            while produced < max_new_tokens:
                step = min(k, max_new_tokens - produced - 1)
                tokens, result = await self._local_draft.round(self._verifier, self._worker, self._target, kv, step)
                self._metrics.verified(step, result.accepted, result.seconds)
                tokens = self._until_end(tokens[: max_new_tokens - produced], ignore_eos)
                produced += len(tokens)
                done = produced == max_new_tokens or (tokens[-1] in self._eos and not ignore_eos)
                logprobs = None if result.logprobs is None else result.logprobs[: len(tokens)]
                await self._connection.send(Tokens(sid=self.sid, tokens=tokens, done=done, logprobs=logprobs))
                self.last_active = time.monotonic()
                if done or self._close_requested:
                    return
        finally:
            self._local_draft.release(kv)

    def _until_end(self, tokens: list[int], ignore_eos: bool) -> list[int]:
        """Tokens up to and including the first end-of-sequence token (the edge drops it)."""
        if not ignore_eos:
            for i, token in enumerate(tokens):
                if token in self._eos:
                    return tokens[: i + 1]
        return tokens

    async def _send_error(self, code: ErrorCode, text: str) -> None:
        self._metrics.error(code.value)
        try:
            await self._connection.send(Error(code=code, message=text, sid=self.sid))
        except Exception:  # the link may be gone; the session is being torn down anyway
            log.debug("could not report an error to session %d", self.sid)
