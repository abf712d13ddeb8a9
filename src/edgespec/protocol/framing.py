"""Length-prefixed frames: a 4-byte big-endian body length, then the body. Sans-IO."""

from __future__ import annotations

import struct

from edgespec.protocol.codec import ProtocolError
from edgespec.protocol.messages import ErrorCode

HEADER = struct.Struct(">I")
HANDSHAKE_MAX_FRAME_BYTES = 16 * 1024  # before a peer is authenticated it may send little


def frame(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


class FrameBuffer:
    """Accumulates bytes from a stream and cuts them into frame bodies."""

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every complete body. Raises on an oversize header."""
        self._buffer += data
        bodies = []
        while len(self._buffer) >= HEADER.size:
            (length,) = HEADER.unpack_from(self._buffer)
            if length > self.max_frame_bytes:
                raise ProtocolError(
                    ErrorCode.FRAME_TOO_LARGE,
                    f"frame of {length} bytes exceeds the limit of {self.max_frame_bytes}",
                )
            end = HEADER.size + length
            if len(self._buffer) < end:
                break
            bodies.append(bytes(self._buffer[HEADER.size : end]))
            del self._buffer[:end]
        return bodies

    @property
    def pending_bytes(self) -> int:
        return len(self._buffer)
