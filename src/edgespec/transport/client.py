"""The edge's persistent link to its cloud: handshake, then many sessions multiplexed on one
connection, each with its own inbox, plus ping/pong for RTT."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

from edgespec.config import LinkConfig, LinkEmulation, SamplingParams
from edgespec.protocol.codec import ProtocolError
from edgespec.protocol.framing import HANDSHAKE_MAX_FRAME_BYTES
from edgespec.protocol.handshake import answer_challenge, check_welcome
from edgespec.protocol.messages import (
    Challenge,
    Close,
    Decode,
    Draft,
    Error,
    Message,
    Open,
    Ping,
    Pong,
    TokenizerId,
    Tokens,
    Verdict,
    Verify,
    Welcome,
)
from edgespec.transport.connection import Connection, ConnectionClosed, FramedConnection
from edgespec.transport.emulation import EmulatedConnection
from edgespec.transport.tls import client_context


class LinkError(Exception):
    """The cloud cannot be reached, refused the handshake, or the link broke."""


class CloudError(Exception):
    """The cloud answered a session's request with an Error frame."""

    def __init__(self, error: Error) -> None:
        super().__init__(f"cloud error {error.code.value}: {error.message}")
        self.error = error
        self.code = error.code

    def __reduce__(self) -> tuple[type[CloudError], tuple[Error]]:
        return CloudError, (self.error,)  # crosses process boundaries (the benchmarks' edge processes)


class _LinkLost:
    """Put in every inbox when the connection ends."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class CloudLink:
    def __init__(self, conn: Connection, welcome: Welcome, config: LinkConfig) -> None:
        self._conn = conn
        self.welcome = welcome
        self.config = config
        self._inboxes: dict[int, asyncio.Queue[tuple[Message, int] | _LinkLost]] = {}
        self._pongs: dict[int, asyncio.Future[None]] = {}
        self._ids = itertools.count(1)
        self._closed_reason: str | None = None
        self._lost = asyncio.Event()
        self._reader = asyncio.create_task(self._read_loop())

    @classmethod
    async def connect(cls, config: LinkConfig, tokenizer: TokenizerId) -> CloudLink:
        where = f"{config.host}:{config.port}"
        tls = client_context(config.tls_ca) if config.tls_ca else None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(config.host, config.port, ssl=tls), config.connect_timeout_s
            )
        except (OSError, TimeoutError) as exc:
            raise LinkError(f"cannot reach the cloud at {where}: {exc or 'timed out'}") from None
        conn = FramedConnection(reader, writer, HANDSHAKE_MAX_FRAME_BYTES)
        try:
            welcome = await asyncio.wait_for(_handshake(conn, config, tokenizer), config.connect_timeout_s)
        except (ProtocolError, ConnectionClosed, TimeoutError) as exc:
            await conn.close()
            raise LinkError(f"handshake with the cloud at {where} failed: {exc or 'timed out'}") from None
        conn.set_max_frame_bytes(welcome.limits.max_frame_bytes)
        if config.emulation.active:
            return cls(EmulatedConnection(conn, config.emulation), welcome, config)
        return cls(conn, welcome, config)

    @property
    def connected(self) -> bool:
        return self._closed_reason is None

    @property
    def active_sessions(self) -> int:
        """Sessions this edge has open on the link."""
        return len(self._inboxes)

    async def wait_lost(self) -> str:
        """Wait until the link goes down; returns why."""
        await self._lost.wait()
        assert self._closed_reason is not None
        return self._closed_reason

    def retune(self, emulation: LinkEmulation) -> None:
        """Change an emulated link's RTT, bandwidth or loss mid-run (benchmarks of adaptation)."""
        if not isinstance(self._conn, EmulatedConnection):
            raise LinkError("this link is not emulated; start it with link emulation to retune it")
        self._conn.retune(emulation)

    def session(self) -> RemoteSession:
        sid = next(self._ids)
        self._inboxes[sid] = asyncio.Queue()
        return RemoteSession(self, sid)

    async def ping(self, timeout_s: float | None = None) -> float:
        """One round trip, in seconds; TimeoutError after `timeout_s` (default: the reply timeout)."""
        nonce = next(self._ids)
        waiter = asyncio.get_running_loop().create_future()
        self._pongs[nonce] = waiter
        started = time.perf_counter()
        await self.send(Ping(nonce=nonce))
        try:
            await asyncio.wait_for(waiter, timeout_s or self.config.reply_timeout_s)
        finally:
            self._pongs.pop(nonce, None)
        return time.perf_counter() - started

    async def send(self, message: Message) -> int:
        if self._closed_reason is not None:
            raise LinkError(self._closed_reason)
        try:
            return await self._conn.send(message)
        except ConnectionClosed as exc:
            raise LinkError(f"connection to the cloud lost: {exc}") from None

    async def receive(self, sid: int) -> tuple[Message, int]:
        """The next message for a session; raises LinkError if the link goes down first."""
        try:
            item = await asyncio.wait_for(self._inboxes[sid].get(), self.config.reply_timeout_s)
        except TimeoutError:
            raise LinkError(f"no reply from the cloud within {self.config.reply_timeout_s} s") from None
        if isinstance(item, _LinkLost):
            raise LinkError(item.reason)
        return item

    def post(self, message: Message) -> int:
        """Send without waiting (see FramedConnection.send_nowait); raises LinkError if down."""
        if self._closed_reason is not None:
            raise LinkError(self._closed_reason)
        try:
            return self._conn.send_nowait(message)
        except ConnectionClosed as exc:
            raise LinkError(f"connection to the cloud lost: {exc}") from None

    def forget(self, sid: int) -> None:
        self._inboxes.pop(sid, None)

    async def close(self) -> None:
        self._reader.cancel()
        await self._conn.close()
        self._shut_down("link closed by the edge")

    async def _read_loop(self) -> None:
        try:
            while True:
                message, size = await self._conn.recv()
                self._route(message, size)
        except (ConnectionClosed, ProtocolError) as exc:
            self._shut_down(f"connection to the cloud lost: {exc}")

    def _route(self, message: Message, size: int) -> None:
        if isinstance(message, Pong):
            waiter = self._pongs.get(message.nonce)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        elif isinstance(message, Verdict | Tokens | Error) and message.sid in self._inboxes:
            self._inboxes[message.sid].put_nowait((message, size))
        elif isinstance(message, Error) and message.sid is None:
            self._shut_down(f"the cloud ended the link: {message.code.value}: {message.message}")

    def _shut_down(self, reason: str) -> None:
        if self._closed_reason is not None:
            return
        self._closed_reason = reason
        self._lost.set()
        for inbox in self._inboxes.values():
            inbox.put_nowait(_LinkLost(reason))
        for waiter in self._pongs.values():
            if not waiter.done():
                waiter.set_exception(LinkError(reason))


async def _handshake(conn: FramedConnection, config: LinkConfig, tokenizer: TokenizerId) -> Welcome:
    challenge, _ = await conn.recv()
    _raise_if_error(challenge)
    if not isinstance(challenge, Challenge):
        raise LinkError(f"expected a Challenge, got {type(challenge).__name__}")
    hello = answer_challenge(challenge, config.auth_token, tokenizer, agent="edgespec-edge")
    await conn.send(hello)
    welcome, _ = await conn.recv()
    _raise_if_error(welcome)
    if not isinstance(welcome, Welcome):
        raise LinkError(f"expected a Welcome, got {type(welcome).__name__}")
    check_welcome(challenge, hello, welcome, config.auth_token)
    return welcome


def _raise_if_error(message: Message) -> None:
    if isinstance(message, Error):
        raise ProtocolError(message.code, message.message)


class RemoteSession:
    """One request's session on the cloud; counts the bytes it moves."""

    def __init__(self, link: CloudLink, sid: int) -> None:
        self.link = link
        self.sid = sid
        self.bytes_up = 0
        self.bytes_down = 0
        self._seq = 0  # of the latest round or burst sent (the Open is 0)
        self._answered = 0  # rounds and bursts fully answered, so the seq of the next verdict
        self._opened = False

    async def first_round(
        self, prompt: list[int], sampling: SamplingParams, max_new_tokens: int, draft: Draft, logprobs: int | None
    ) -> Verdict:
        """Open in spec mode: the cloud prefills the prompt and verifies the first block."""
        await self.open_round(prompt, sampling, max_new_tokens, draft, logprobs)
        return await self.verdict()

    async def open_round(
        self, prompt: list[int], sampling: SamplingParams, max_new_tokens: int, draft: Draft, logprobs: int | None
    ) -> None:
        """Send the spec-mode Open without waiting for its verdict (`verdict()` reads it)."""
        await self._open(prompt, sampling, max_new_tokens, draft=draft, logprobs=logprobs)

    async def round(self, start: int, draft: Draft) -> Verdict:
        self._seq += 1
        await self._send(Verify(sid=self.sid, seq=self._seq, start=start, draft=draft))
        return await self.verdict()

    async def stream(
        self,
        prompt: list[int],
        sampling: SamplingParams,
        max_new_tokens: int,
        ignore_eos: bool,
        logprobs: int | None,
        colocated_k: int | None = None,
    ) -> AsyncIterator[Tokens]:
        """Cloud mode (or, with colocated_k, co-located speculation): the cloud streams its tokens."""
        options = {"ignore_eos": ignore_eos, "logprobs": logprobs, "colocated_k": colocated_k}
        await self._open(prompt, sampling, max_new_tokens, cloud_decodes=True, **options)
        async for message in self._tokens_until_done():
            yield message

    async def request_burst(self, start: int, count: int, ignore_eos: bool) -> None:
        """Spec mode: ask the cloud to decode up to `count` tokens from position `start` on its
        own; `burst()` reads them. May follow an unanswered `open_round` at once: the cloud
        handles a session's messages in order."""
        self._seq += 1
        await self._send(Decode(sid=self.sid, seq=self._seq, start=start, count=count, ignore_eos=ignore_eos))

    async def burst(self) -> AsyncIterator[Tokens]:
        async for message in self._tokens_until_done():
            yield message
        self._answered += 1

    def close(self) -> None:
        """Free the session on the cloud; best effort when the link is already down. Synchronous,
        so it completes even inside a cancelled task."""
        if self._opened and self.link.connected:
            with contextlib.suppress(LinkError):
                self.bytes_up += self.link.post(Close(sid=self.sid))
        self.link.forget(self.sid)

    async def _open(self, prompt: list[int], sampling: SamplingParams, max_new_tokens: int, **options: Any) -> None:
        await self._send(Open(sid=self.sid, prompt=prompt, sampling=sampling, max_new_tokens=max_new_tokens, **options))
        self._opened = True

    async def _send(self, message: Message) -> None:
        self.bytes_up += await self.link.send(message)

    async def _receive(self) -> Message:
        message, size = await self.link.receive(self.sid)
        self.bytes_down += size
        if isinstance(message, Error):
            raise CloudError(message)
        return message

    async def _tokens_until_done(self) -> AsyncIterator[Tokens]:
        while True:
            message = await self._receive()
            if not isinstance(message, Tokens):
                raise LinkError(f"expected Tokens, got {type(message).__name__}")
            yield message
            if message.done:
                return

    async def verdict(self) -> Verdict:
        """The verdict of the oldest unanswered round."""
        message = await self._receive()
        if not isinstance(message, Verdict) or message.seq != self._answered:
            raise LinkError(f"expected the verdict of round {self._answered}, got {message!r}")
        self._answered += 1
        return message
