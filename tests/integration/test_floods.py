"""The cloud against clients that hold on to it: a flood of connections that never say Hello, a
Hello dripped a byte at a time, and an edge that sends without ever reading. Each is cut off in
bounded time, and well-behaved edges are served meanwhile."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from edgespec.cloud.server import CloudServer
from edgespec.config import ConnectionGuards, LinkConfig
from edgespec.protocol import handshake
from edgespec.protocol.codec import encode
from edgespec.protocol.framing import frame
from edgespec.protocol.messages import Challenge, Ping, TokenizerId
from edgespec.transport.client import CloudLink
from tests.conftest import TinyPair
from tests.integration.cloud_fixtures import TOKEN, RawEdge, edge_with_open_session, still_serves, with_server

FLOOD = 300
FLOOD_ADDRESS = "127.0.0.2"  # still loopback: Linux answers for all of 127.0.0.0/8
PER_ADDRESS = 16


async def flood_connection(port: int) -> RawEdge:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(FLOOD_ADDRESS, 0))
    return RawEdge(reader, writer)


async def closed_within(edge: RawEdge, seconds: float) -> bool:
    """Whether the cloud closes this connection within `seconds` (whatever it says first)."""
    try:
        async with asyncio.timeout(seconds):
            while await edge.reader.read(4096):
                pass
        return True
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    finally:
        edge.writer.close()


async def served_quickly(port: int, identity: TokenizerId, link: CloudLink) -> None:
    """An established edge answers a ping and a new edge completes its handshake and a round, fast."""
    started = time.monotonic()
    await link.ping(timeout_s=1.0)
    await still_serves(port, identity)
    assert time.monotonic() - started < 2.0


def test_a_connection_flood_is_bounded_and_edges_are_served_throughout(tiny_pair: TinyPair) -> None:
    async def scenario(server: CloudServer, port: int, identity: TokenizerId) -> None:
        link = await CloudLink.connect(LinkConfig(port=port, auth_token=TOKEN), identity)
        flood = [await flood_connection(port) for _ in range(FLOOD)]
        await served_quickly(port, identity, link)
        assert server.gate.pending <= PER_ADDRESS
        closed = await asyncio.gather(*(closed_within(edge, 0.5) for edge in flood[PER_ADDRESS:]))
        assert all(closed)  # beyond the per-address bound: dropped at once
        held = await asyncio.gather(*(closed_within(edge, 3.0) for edge in flood[:PER_ADDRESS]))
        assert all(held)  # within it: dropped at the handshake timeout
        assert server.gate.pending == 0
        await served_quickly(port, identity, link)
        await link.close()

    guards = ConnectionGuards(max_pending_per_address=PER_ADDRESS)
    with_server(tiny_pair, scenario, handshake_timeout_s=1.5, guards=guards)


def test_a_hello_dripped_byte_by_byte_is_cut_at_the_handshake_timeout(tiny_pair: TinyPair) -> None:
    async def scenario(server: CloudServer, port: int, identity: TokenizerId) -> None:
        edge = RawEdge(*await asyncio.open_connection("127.0.0.1", port))
        challenge = await edge.recv()
        assert isinstance(challenge, Challenge)
        hello = frame(encode(handshake.answer_challenge(challenge, TOKEN, identity)))
        started = time.monotonic()
        with pytest.raises(ConnectionError):
            for byte in hello:  # each byte in time, the whole far too slow
                await edge.send_bytes(bytes([byte]))
                await asyncio.sleep(0.1)
        assert time.monotonic() - started < 2.0

    with_server(tiny_pair, scenario, handshake_timeout_s=1.0)


def test_an_edge_that_never_reads_is_dropped_and_its_sessions_freed(tiny_pair: TinyPair) -> None:
    async def scenario(server: CloudServer, port: int, identity: TokenizerId) -> None:
        edge = await edge_with_open_session(port, identity)
        edge.writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert server.open_sessions == 1
        pings = frame(encode(Ping(nonce=1))) * 10_000
        async with asyncio.timeout(30):
            with pytest.raises(ConnectionError):
                while True:  # pings whose pongs it never reads
                    await edge.send_bytes(pings)
        edge.writer.close()

    guards = ConnectionGuards(max_unsent_bytes=64 * 1024, send_timeout_s=2.0)
    with_server(tiny_pair, scenario, guards=guards)
