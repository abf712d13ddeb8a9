"""A framed, message-level connection over asyncio streams."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from dataclasses import dataclass
from typing import NoReturn, Protocol

from edgespec.protocol.codec import decode, encode
from edgespec.protocol.framing import FrameBuffer, frame
from edgespec.protocol.messages import Message

_READ_CHUNK = 64 * 1024


class ConnectionClosed(Exception):
    """The peer closed the connection (or it broke)."""


class Connection(Protocol):
    """A message-level connection: FramedConnection, or the same seen through link emulation."""

    peer: str

    def set_max_frame_bytes(self, limit: int) -> None: ...
    async def send(self, message: Message) -> int: ...
    def send_nowait(self, message: Message) -> int: ...
    async def recv(self) -> tuple[Message, int]: ...
    async def close(self) -> None: ...


@dataclass(frozen=True)
class SendBounds:
    """When a peer that does not read is given up on: too many bytes waiting to be sent to it, or
    a socket buffer that stays full too long. Without them its frames pile up without end."""

    max_unsent_bytes: int
    timeout_s: float


class FramedConnection:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        max_frame_bytes: int,
        send_bounds: SendBounds | None = None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._send_bounds = send_bounds
        self._frames = FrameBuffer(max_frame_bytes)
        self._bodies: deque[bytes] = deque()
        self.bytes_sent = 0
        self.bytes_received = 0
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small frames must not wait
        self.peer = str(writer.get_extra_info("peername"))

    def set_max_frame_bytes(self, limit: int) -> None:
        self._frames.max_frame_bytes = limit

    async def send(self, message: Message) -> int:
        """Send one message; returns the bytes it took on the wire."""
        size = self.send_nowait(message)
        if self._writer.transport.get_write_buffer_size() == 0:
            return size  # the socket took it all: nothing to wait for (a timed wait costs a task)
        timeout = self._send_bounds.timeout_s if self._send_bounds else None
        try:
            await asyncio.wait_for(self._writer.drain(), timeout)
        except TimeoutError:
            self._give_up(f"the peer read nothing for {timeout:g} s")
        except (ConnectionError, RuntimeError) as exc:
            raise ConnectionClosed(str(exc)) from None
        return size

    def send_nowait(self, message: Message) -> int:
        """Queue one message without waiting for the socket buffer to drain: for small control
        frames sent from cleanup code, which must not block or be cancelled halfway."""
        return self.send_frame(frame(encode(message)))

    def send_frame(self, data: bytes) -> int:
        """Queue one already framed message (see send_nowait)."""
        if self._writer.is_closing():
            raise ConnectionClosed("the connection is closed")
        try:
            self._writer.write(data)  # one write per frame, so concurrent senders never interleave
        except (ConnectionError, RuntimeError) as exc:
            raise ConnectionClosed(str(exc)) from None
        self.bytes_sent += len(data)
        bounds = self._send_bounds
        if bounds is not None and self._writer.transport.get_write_buffer_size() > bounds.max_unsent_bytes:
            self._give_up(f"more than {bounds.max_unsent_bytes} bytes wait for the peer to read them")
        return len(data)

    def _give_up(self, why: str) -> NoReturn:
        """Drop a peer that stopped reading: abort, as a polite close would wait on the same full buffer."""
        self._writer.transport.abort()
        raise ConnectionClosed(why)

    async def recv(self) -> tuple[Message, int]:
        """The next message and its size on the wire. Raises ProtocolError on a bad frame."""
        while not self._bodies:
            try:
                data = await self._reader.read(_READ_CHUNK)
            except ConnectionError as exc:
                raise ConnectionClosed(str(exc)) from None
            if not data:
                raise ConnectionClosed("peer closed the connection")
            self._bodies.extend(self._frames.feed(data))
        body = self._bodies.popleft()
        self.bytes_received += len(body) + 4
        return decode(body), len(body) + 4

    async def close(self) -> None:
        if self._writer.is_closing():
            return
        self._writer.close()
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self._writer.wait_closed()
