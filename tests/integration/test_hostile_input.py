"""The cloud under bad input on a real loopback socket: each bad frame or request gets an Error or
a closed connection, a well-behaved edge keeps being served, and no session is left behind."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace

import msgspec
import pytest

from edgespec.cloud.launch import build_server
from edgespec.cloud.server import CloudServer
from edgespec.config import CloudConfig, LinkConfig, ModelConfig, SamplingParams
from edgespec.engine.loading import load_tokenizer
from edgespec.protocol import handshake
from edgespec.protocol.codec import decode, encode
from edgespec.protocol.framing import frame
from edgespec.protocol.messages import (
    PROTOCOL_VERSION,
    Draft,
    Error,
    ErrorCode,
    Message,
    Open,
    Ping,
    Pong,
    TokenizerId,
    Verdict,
    Verify,
)
from edgespec.transport.client import CloudLink, LinkError
from tests.conftest import TinyPair

TOKEN = "s3cret"


class RawEdge:
    """A hand-driven client that can send anything."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send_bytes(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, message: Message) -> None:
        await self.send_bytes(frame(encode(message)))

    async def recv(self) -> Message:
        length = int.from_bytes(await asyncio.wait_for(self.reader.readexactly(4), 5), "big")
        return decode(await self.reader.readexactly(length))

    async def closed_by_peer(self) -> bool:
        try:
            return await asyncio.wait_for(self.reader.read(), 5) == b""
        except ConnectionError:
            return True
        finally:
            self.writer.close()


async def raw_edge(
    port: int, identity: TokenizerId, token: str | None = TOKEN, version: int = PROTOCOL_VERSION
) -> RawEdge:
    edge = RawEdge(*await asyncio.open_connection("127.0.0.1", port))
    challenge = await edge.recv()
    hello = handshake.answer_challenge(challenge, token, identity)  # type: ignore[arg-type]
    await edge.send(msgspec.structs.replace(hello, version=version))
    return edge


def with_server(
    tiny_pair: TinyPair, scenario: Callable[[CloudServer, int, TokenizerId], Awaitable[None]], **config: object
) -> None:
    async def main() -> None:
        base = CloudConfig(model=ModelConfig(str(tiny_pair.target)), port=0, auth_token=TOKEN)
        server = build_server(replace(base, **config))  # type: ignore[arg-type]
        _, port = await server.start()
        identity = server.tokenizer.identity
        try:
            await scenario(server, port, identity)
            await still_serves(port, identity)
            await asyncio.sleep(0.2)  # let torn-down sessions finish their cleanup
            assert server.open_sessions == 0
        finally:
            await server.close()

    asyncio.run(main())


async def still_serves(port: int, identity: TokenizerId) -> None:
    link = await CloudLink.connect(LinkConfig(port=port, auth_token=TOKEN), identity)
    session = link.session()
    verdict = await session.first_round([1, 2, 3], SamplingParams(), 4, Draft([5]), None)
    assert isinstance(verdict, Verdict)
    session.close()
    await link.close()


GOOD_OPEN = Open(sid=1, prompt=[1, 2, 3], sampling=SamplingParams(), max_new_tokens=4, draft=Draft([5]))


async def edge_with_open_session(port: int, identity: TokenizerId) -> RawEdge:
    """A raw edge past its handshake with session 1 open and its first round answered."""
    edge = await raw_edge(port, identity)
    await edge.recv()  # Welcome
    await edge.send(GOOD_OPEN)
    assert isinstance(await edge.recv(), Verdict)
    return edge


@pytest.mark.parametrize(
    "bad_bytes",
    [
        b"\x00\x00\x00\x05garbage-beyond",  # a frame of garbage
        frame(b"\x92\xa1x\x01"),  # msgpack, but no message
        frame(b"\x82\xa1t\xa5nuke!\xa3sid\x01"),  # an unknown tag
        (10**9).to_bytes(4, "big"),  # an oversize frame header
    ],
)
def test_broken_frames_get_an_error_and_a_closed_connection(tiny_pair: TinyPair, bad_bytes: bytes) -> None:
    async def scenario(server: CloudServer, port: int, identity: TokenizerId) -> None:
        edge = await edge_with_open_session(port, identity)  # a session that must not leak
        await edge.send_bytes(bad_bytes)
        error = await edge.recv()
        assert isinstance(error, Error) and error.code in (ErrorCode.BAD_FRAME, ErrorCode.FRAME_TOO_LARGE)
        assert await edge.closed_by_peer()

    with_server(tiny_pair, scenario)


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (Verify(sid=42, seq=1, start=3, draft=Draft([1])), ErrorCode.UNKNOWN_SESSION),
        (Open(sid=2, prompt=[1, 10**6], sampling=SamplingParams(), max_new_tokens=4), ErrorCode.INVALID_REQUEST),
        (
            Open(sid=2, prompt=[1], sampling=SamplingParams(), max_new_tokens=4, draft=Draft([1] * 99)),
            ErrorCode.INVALID_REQUEST,
        ),
        (Open(sid=2, prompt=[1] * 10, sampling=SamplingParams(), max_new_tokens=10**6), ErrorCode.CONTEXT_TOO_LONG),
        (Verify(sid=1, seq=7, start=3, draft=Draft([1])), ErrorCode.OUT_OF_ORDER),
        (GOOD_OPEN, ErrorCode.DUPLICATE_SESSION),
        (Pong(nonce=1), ErrorCode.UNEXPECTED_MESSAGE),
    ],
)
def test_bad_requests_get_an_error_and_the_connection_lives_on(
    tiny_pair: TinyPair, request_: Message, code: ErrorCode
) -> None:
    async def scenario(server: CloudServer, port: int, identity: TokenizerId) -> None:
        edge = await edge_with_open_session(port, identity)
        await edge.send(request_)
        error = await edge.recv()
        assert isinstance(error, Error) and error.code is code
        await edge.send(Ping(nonce=9))
        assert await edge.recv() == Pong(nonce=9)
        edge.writer.close()

    with_server(tiny_pair, scenario)


def test_a_frame_split_into_single_bytes_is_understood(tiny_pair: TinyPair) -> None:
    async def scenario(server: CloudServer, port: int, identity: TokenizerId) -> None:
        edge = await raw_edge(port, identity)
        await edge.recv()
        for byte in frame(encode(Ping(nonce=3))):
            await edge.send_bytes(bytes([byte]))
        assert await edge.recv() == Pong(nonce=3)
        edge.writer.close()

    with_server(tiny_pair, scenario)


@pytest.mark.parametrize(
    ("token", "version", "code"),
    [
        ("wrong", PROTOCOL_VERSION, ErrorCode.AUTH_FAILED),
        (None, PROTOCOL_VERSION, ErrorCode.AUTH_FAILED),
        (TOKEN, 7, ErrorCode.BAD_VERSION),
    ],
)
def test_bad_handshakes_are_refused(tiny_pair: TinyPair, token: str | None, version: int, code: ErrorCode) -> None:
    async def scenario(server: CloudServer, port: int, identity: TokenizerId) -> None:
        edge = await raw_edge(port, identity, token=token, version=version)
        error = await edge.recv()
        assert isinstance(error, Error) and error.code is code
        assert await edge.closed_by_peer()

    with_server(tiny_pair, scenario)


def test_a_silent_client_is_dropped_after_the_handshake_timeout(tiny_pair: TinyPair) -> None:
    async def scenario(server: CloudServer, port: int, identity: TokenizerId) -> None:
        edge = RawEdge(*await asyncio.open_connection("127.0.0.1", port))
        await edge.recv()  # the Challenge, never answered
        error = await edge.recv()
        assert isinstance(error, Error) and error.code is ErrorCode.HANDSHAKE_TIMEOUT
        assert await edge.closed_by_peer()

    with_server(tiny_pair, scenario, handshake_timeout_s=0.3)


def test_an_edge_that_vanishes_mid_session_leaves_nothing(tiny_pair: TinyPair) -> None:
    async def scenario(server: CloudServer, port: int, identity: TokenizerId) -> None:
        edge = await edge_with_open_session(port, identity)
        assert server.open_sessions == 1
        edge.writer.close()

    with_server(tiny_pair, scenario)


def test_a_draft_with_another_tokenizer_is_refused_at_connect(tiny_pair: TinyPair) -> None:
    foreign = load_tokenizer(tiny_pair.foreign_draft).identity

    async def scenario(server: CloudServer, port: int, identity: TokenizerId) -> None:
        with pytest.raises(LinkError, match="tokenizer mismatch") as caught:
            await CloudLink.connect(LinkConfig(port=port, auth_token=TOKEN), foreign)
        assert "foreign" in str(caught.value) and "target" in str(caught.value)

    with_server(tiny_pair, scenario)


def test_idle_sessions_expire(tiny_pair: TinyPair) -> None:
    async def scenario(server: CloudServer, port: int, identity: TokenizerId) -> None:
        edge = await edge_with_open_session(port, identity)
        error = await edge.recv()
        assert isinstance(error, Error) and error.code is ErrorCode.SESSION_EXPIRED
        assert server.open_sessions == 0
        edge.writer.close()

    with_server(tiny_pair, scenario, session_idle_timeout_s=0.4)


def test_a_public_address_without_a_token_is_refused() -> None:
    with pytest.raises(ValueError, match="without an auth token"):
        CloudConfig(model=ModelConfig("m"), host="0.0.0.0")
    CloudConfig(model=ModelConfig("m"), host="0.0.0.0", insecure_no_auth=True)
