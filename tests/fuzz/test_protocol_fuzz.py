"""Fuzzing the sans-IO protocol: any bytes, any chunking, any mutation of a valid frame, any order
of session messages. The only failure allowed is a ProtocolError with a code to send back; the
session table's books always balance."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from edgespec.config import SamplingParams
from edgespec.protocol.codec import ProtocolError, decode, encode
from edgespec.protocol.framing import FrameBuffer, frame
from edgespec.protocol.messages import Close, Draft, ErrorCode, Message, Open, SparseDist, Verify
from tests.fuzz.session_driver import TwoEdges

token = st.integers(min_value=0, max_value=60)  # some ids past the vocabulary
sampling = st.sampled_from([SamplingParams(), SamplingParams(temperature=0.7, seed=3)])
sparse = st.builds(
    SparseDist, ids=st.lists(token, min_size=0, max_size=6), weights=st.lists(st.integers(1, 9), max_size=6)
)
draft = st.builds(Draft, tokens=st.lists(token, max_size=6), q=st.none() | st.lists(sparse, max_size=6))
sid = st.integers(min_value=0, max_value=4)
messages = st.one_of(
    st.builds(Open, sid=sid, prompt=st.lists(token, max_size=70), sampling=sampling,
              max_new_tokens=st.integers(0, 80), cloud_decodes=st.booleans(), draft=st.none() | draft),
    st.builds(Verify, sid=sid, seq=st.integers(0, 5), start=st.integers(0, 80), draft=draft),
    st.builds(Close, sid=sid),
)  # fmt: skip


def decodes_or_refuses(body: bytes) -> Message | None:
    try:
        return decode(body)
    except ProtocolError as exc:
        assert exc.code is ErrorCode.BAD_FRAME
        return None


@given(st.binary(max_size=512))
def test_any_bytes_decode_or_are_refused(body: bytes) -> None:
    decodes_or_refuses(body)


@given(messages, st.integers(0, 2**32 - 1), st.integers(1, 8))
def test_mutated_frames_decode_or_are_refused(message: Message, seed: int, flips: int) -> None:
    body = bytearray(encode(message))
    rng = random.Random(seed)
    for _ in range(flips):
        body[rng.randrange(len(body))] = rng.randrange(256)
    decoded = decodes_or_refuses(bytes(body))
    if decoded is not None:
        assert encode(decoded)  # whatever decodes is a well-formed message again


@given(st.lists(messages, min_size=1, max_size=8), st.lists(st.integers(1, 40), min_size=1, max_size=20))
def test_frames_survive_any_chunking(sent: list[Message], cuts: list[int]) -> None:
    stream = b"".join(frame(encode(message)) for message in sent)
    buffer, bodies, position = FrameBuffer(max_frame_bytes=4096), [], 0
    for size in cuts * (len(stream) // max(sum(cuts), 1) + 1):
        bodies += buffer.feed(stream[position : position + size])
        position += size
    bodies += buffer.feed(stream[position:])
    assert [decode(body) for body in bodies] == sent and buffer.pending_bytes == 0


@given(st.binary(max_size=64), st.integers(1, 64))
def test_any_byte_stream_frames_or_is_refused(data: bytes, limit: int) -> None:
    try:
        bodies = FrameBuffer(max_frame_bytes=limit).feed(data)
    except ProtocolError as exc:
        assert exc.code is ErrorCode.FRAME_TOO_LARGE
        return
    assert all(len(body) <= limit for body in bodies)


@given(st.lists(st.tuples(st.integers(0, 1), messages), max_size=30))
def test_session_tables_refuse_cleanly_and_keep_their_books(steps: list[tuple[int, Message]]) -> None:
    edges = TwoEdges()
    for connection, message in steps:
        edges.apply(connection, message)
