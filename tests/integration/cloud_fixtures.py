"""A cloud server in this process, and hand-driven clients that can send it anything."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace

import msgspec

from edgespec.cloud.launch import build_server
from edgespec.cloud.server import CloudServer
from edgespec.config import CloudConfig, LinkConfig, ModelConfig, SamplingParams
from edgespec.protocol import handshake
from edgespec.protocol.codec import decode, encode
from edgespec.protocol.framing import frame
from edgespec.protocol.messages import PROTOCOL_VERSION, Draft, Message, Open, TokenizerId, Verdict
from edgespec.transport.client import CloudLink
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
    edge, _ = await edge_after_first_round(port, identity)
    return edge


async def edge_after_first_round(port: int, identity: TokenizerId) -> tuple[RawEdge, int]:
    """edge_with_open_session, and the session's context length (where its next round starts)."""
    edge = await raw_edge(port, identity)
    await edge.recv()  # Welcome
    await edge.send(GOOD_OPEN)
    verdict = await edge.recv()
    assert isinstance(verdict, Verdict)
    return edge, len(GOOD_OPEN.prompt) + verdict.accepted + 1
