"""The cloud under bad input on a real loopback socket: each bad frame or request gets an Error or
a closed connection, a well-behaved edge keeps being served, and no session is left behind."""

from __future__ import annotations

import asyncio

import pytest

from edgespec.cloud.server import CloudServer
from edgespec.config import CloudConfig, LinkConfig, ModelConfig, SamplingParams
from edgespec.engine.loading import load_tokenizer
from edgespec.protocol.codec import encode
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
from tests.integration.cloud_fixtures import (
    GOOD_OPEN,
    TOKEN,
    RawEdge,
    edge_after_first_round,
    edge_with_open_session,
    raw_edge,
    with_server,
)


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


def test_a_round_sent_before_the_last_verdict_is_answered_after_it(tiny_pair: TinyPair) -> None:
    """A round starts as it arrives when its session is idle; one that comes behind it waits its
    turn, however eagerly the edge sends: here a well-formed round and one out of order, back to
    back, get their verdict and then their error, in that order."""

    async def scenario(server: CloudServer, port: int, identity: TokenizerId) -> None:
        edge, context = await edge_after_first_round(port, identity)
        await edge.send_bytes(
            frame(encode(Verify(sid=1, seq=1, start=context, draft=Draft([6]))))
            + frame(encode(Verify(sid=1, seq=2, start=context, draft=Draft([7]))))
        )
        verdict, error = await edge.recv(), await edge.recv()
        assert isinstance(verdict, Verdict) and verdict.seq == 1
        assert isinstance(error, Error) and error.code is ErrorCode.OUT_OF_ORDER
        await edge.send(Ping(nonce=4))
        assert await edge.recv() == Pong(nonce=4)
        assert server.open_sessions == 0  # the session the error ended is freed
        edge.writer.close()

    with_server(tiny_pair, scenario)


def test_a_round_whose_forward_fails_ends_its_session_with_an_internal_error(
    tiny_pair: TinyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario(server: CloudServer, port: int, identity: TokenizerId) -> None:
        edge, context = await edge_after_first_round(port, identity)
        with monkeypatch.context() as patch:
            for forward in ("forward", "forward_many"):  # a batch of one or of many
                patch.setattr(server.verifier.engine, forward, _broken_forward)
            await edge.send(Verify(sid=1, seq=1, start=context, draft=Draft([6])))
            error = await edge.recv()
        assert isinstance(error, Error) and error.code is ErrorCode.INTERNAL and error.sid == 1
        assert server.open_sessions == 0
        edge.writer.close()

    with_server(tiny_pair, scenario)


def _broken_forward(*work: object) -> object:
    raise RuntimeError("the GPU fell off the bus")


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
