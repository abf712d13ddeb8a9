"""Message bodies to bytes and back. Never pickle: msgpack with a closed set of tagged structs."""

from __future__ import annotations

import msgspec

from edgespec.protocol.messages import ErrorCode, Message


class ProtocolError(Exception):
    """A peer broke the protocol; `code` goes back to it in an Error frame."""

    def __init__(self, code: ErrorCode, message: str, sid: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.sid = sid


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


def encode(message: Message) -> bytes:
    return _encoder.encode(message)


def decode(body: bytes) -> Message:
    """Decode one frame body; anything malformed raises ProtocolError(BAD_FRAME)."""
    try:
        return _decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:  # the last: bad UTF-8 text
        raise ProtocolError(ErrorCode.BAD_FRAME, f"undecodable frame: {exc}") from None
