"""Link emulation inside the edge's transport: every frame, both ways, arrives when a link of the
configured RTT, jitter, bandwidth and loss would deliver it, and in order, as TCP would."""

from __future__ import annotations

import asyncio
import random
import time

from edgespec.config import LinkEmulation
from edgespec.protocol.codec import ProtocolError, encode
from edgespec.protocol.framing import frame
from edgespec.protocol.messages import Message
from edgespec.transport.connection import ConnectionClosed, FramedConnection

MIN_RTO_S = 0.2  # Linux's lower bound on TCP's retransmission timeout
BITS_PER_BYTE = 8
MS = 1e-3


class Direction:
    """One way of the emulated link: a serialising queue, then propagation delay."""

    def __init__(self, emulation: LinkEmulation, rng: random.Random) -> None:
        self.emulation = emulation
        self._rng = rng
        self._free_at = 0.0  # when the sender's side of the link finishes its current frame
        self._last_arrival = 0.0

    def arrival(self, now: float, size: int) -> float:
        """When a frame of `size` bytes handed over at `now` arrives at the other end."""
        em = self.emulation
        start = max(now, self._free_at)
        self._free_at = start + (size * BITS_PER_BYTE / (em.bandwidth_mbit * 1e6) if em.bandwidth_mbit else 0.0)
        delay = max(0.0, self._rng.gauss(em.rtt_ms / 2, em.jitter_ms / 2**0.5) * MS)
        if self._rng.random() < em.loss:
            delay += max(MIN_RTO_S, (em.rtt_ms + 4 * em.jitter_ms) * MS)
        self._last_arrival = max(self._free_at + delay, self._last_arrival)  # TCP delivers in order
        return self._last_arrival


class EmulatedConnection:
    """A FramedConnection seen through an emulated link; same interface."""

    def __init__(self, inner: FramedConnection, emulation: LinkEmulation) -> None:
        rng = random.Random(emulation.seed)
        self._inner = inner
        self._up = Direction(emulation, rng)
        self._down = Direction(emulation, rng)
        self._outbox: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        self._inbox: asyncio.Queue[tuple[float, Message, int] | Exception] = asyncio.Queue()
        self._failure: ConnectionClosed | None = None
        self._pumps = [asyncio.create_task(self._send_loop()), asyncio.create_task(self._receive_loop())]
        self.peer = inner.peer

    def set_max_frame_bytes(self, limit: int) -> None:
        self._inner.set_max_frame_bytes(limit)

    def retune(self, emulation: LinkEmulation) -> None:
        """The link changes from now on (a route change); frames in flight keep their arrival times."""
        self._up.emulation = self._down.emulation = emulation

    async def send(self, message: Message) -> int:
        return self.send_nowait(message)

    def send_nowait(self, message: Message) -> int:
        if self._failure is not None:
            raise self._failure
        data = frame(encode(message))
        self._outbox.put_nowait((self._up.arrival(time.monotonic(), len(data)), data))
        return len(data)

    async def recv(self) -> tuple[Message, int]:
        item = await self._inbox.get()
        if isinstance(item, Exception):  # the connection closed, or a bad frame arrived
            raise item
        arrival, message, size = item
        await _sleep_until(arrival)
        return message, size

    async def close(self) -> None:
        for pump in self._pumps:
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        await self._inner.close()

    async def _send_loop(self) -> None:
        # The far end sees a frame at its arrival time: sending it then is the same thing.
        while True:
            arrival, data = await self._outbox.get()
            await _sleep_until(arrival)
            try:
                self._inner.send_frame(data)
            except ConnectionClosed as exc:
                self._failure = exc
                return

    async def _receive_loop(self) -> None:
        while True:
            try:
                message, size = await self._inner.recv()
            except (ConnectionClosed, ProtocolError) as exc:
                self._inbox.put_nowait(exc)
                return
            self._inbox.put_nowait((self._down.arrival(time.monotonic(), size), message, size))


async def _sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
