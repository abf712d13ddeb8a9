"""Codec, framing, handshake and session table: every bad input is a ProtocolError with a code."""

from __future__ import annotations

import msgspec
import pytest

from edgespec.config import Limits, SamplingParams
from edgespec.protocol import handshake
from edgespec.protocol.codec import ProtocolError, decode, encode
from edgespec.protocol.framing import FrameBuffer, frame
from edgespec.protocol.messages import (
    Challenge,
    Close,
    Decode,
    Draft,
    Error,
    ErrorCode,
    Hello,
    Open,
    Ping,
    SparseDist,
    TokenizerId,
    Verdict,
    Verify,
)
from edgespec.protocol.sessions import SessionBudget, SessionTable

TOKENIZER = TokenizerId(name="tok", fingerprint="abc")
SAMPLED = SamplingParams(temperature=0.8, seed=1)
LIMITS = Limits(max_k=8, max_sessions=2, max_context=64, max_draft_support=4, vocab_size=100)


def test_every_message_survives_a_round_trip() -> None:
    messages = [
        Open(sid=1, prompt=[1, 2], sampling=SAMPLED, max_new_tokens=5, draft=Draft([3], [SparseDist([3, 4], [9, 1])])),
        Verify(sid=1, seq=1, start=4, draft=Draft([5, 6])),
        Verdict(sid=1, seq=1, accepted=1, token=7, verify_us=10),
        Decode(sid=1, seq=2, start=6, count=16, ignore_eos=True),
        Close(sid=1),
        Ping(nonce=3),
        Error(code=ErrorCode.UNKNOWN_SESSION, message="no", sid=9),
    ]
    for message in messages:
        assert decode(encode(message)) == message


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\x00garbage",
        msgspec.msgpack.encode({"t": "launch_missiles", "sid": 1}),
        msgspec.msgpack.encode({"t": "close", "sid": 1, "extra": True}),
        msgspec.msgpack.encode({"t": "close", "sid": -1}),
        msgspec.msgpack.encode({"t": "decode", "sid": 1, "seq": 1, "start": 4, "count": 0}),
        msgspec.msgpack.encode({"t": "verify", "sid": 1, "seq": 1, "start": 0, "draft": {"tokens": [-5]}}),
        msgspec.msgpack.encode({"t": "open", "sid": 1, "prompt": [1], "max_new_tokens": 1, "sampling": {"top_p": 2.0}}),
        b"",
    ],
)
def test_malformed_bodies_are_refused_with_bad_frame(body: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(body)
    assert caught.value.code is ErrorCode.BAD_FRAME


def test_frames_split_byte_by_byte_and_coalesced_come_out_whole() -> None:
    bodies = [encode(Ping(nonce=n)) for n in range(5)]
    stream = b"".join(frame(b) for b in bodies)
    one_by_one = FrameBuffer(1024)
    received = [body for i in range(len(stream)) for body in one_by_one.feed(stream[i : i + 1])]
    assert received == bodies
    assert FrameBuffer(1024).feed(stream) == bodies


def test_an_oversize_frame_is_refused_from_its_header() -> None:
    with pytest.raises(ProtocolError) as caught:
        FrameBuffer(100).feed((101).to_bytes(4, "big"))
    assert caught.value.code is ErrorCode.FRAME_TOO_LARGE


def _handshake(edge_token: str | None, cloud_token: str | None, edge_tokenizer: TokenizerId = TOKENIZER) -> bytes:
    challenge = handshake.new_challenge()
    hello = handshake.answer_challenge(challenge, edge_token, edge_tokenizer)
    return handshake.check_hello(challenge, hello, cloud_token, TOKENIZER)


def test_handshake_accepts_the_shared_token_and_rejects_others() -> None:
    _handshake("secret", "secret")
    for wrong in ("guess", None):
        with pytest.raises(ProtocolError) as caught:
            _handshake(wrong, "secret")
        assert caught.value.code is ErrorCode.AUTH_FAILED


def test_the_edge_rejects_a_cloud_that_does_not_know_the_token() -> None:
    challenge = handshake.new_challenge()
    hello = handshake.answer_challenge(challenge, "secret", TOKENIZER)
    impostor_proof = handshake.check_hello(challenge, hello, None, TOKENIZER)  # a cloud without the token
    welcome = msgspec.structs.replace(_welcome(), proof=impostor_proof)
    with pytest.raises(ProtocolError) as caught:
        handshake.check_welcome(challenge, hello, welcome, "secret")
    assert caught.value.code is ErrorCode.AUTH_FAILED


def _welcome():  # type: ignore[no-untyped-def]
    from edgespec.protocol.messages import Welcome

    return Welcome(proof=b"", tokenizer=TOKENIZER, limits=LIMITS, model="m", eos_token_ids=[])


def test_a_draft_with_another_tokenizer_is_refused_naming_both() -> None:
    other = TokenizerId(name="other-tok", fingerprint="zzz")
    with pytest.raises(ProtocolError) as caught:
        _handshake(None, None, other)
    assert caught.value.code is ErrorCode.TOKENIZER_MISMATCH
    assert "other-tok" in caught.value.message and "'tok'" in caught.value.message


def test_a_wrong_version_is_refused_on_both_sides() -> None:
    old = Challenge(version=0, nonce=bytes(32))
    with pytest.raises(ProtocolError) as caught:
        handshake.answer_challenge(old, None, TOKENIZER)
    assert caught.value.code is ErrorCode.BAD_VERSION
    challenge = handshake.new_challenge()
    hello = msgspec.structs.replace(handshake.answer_challenge(challenge, None, TOKENIZER), version=99)
    with pytest.raises(ProtocolError) as caught:
        handshake.check_hello(challenge, hello, None, TOKENIZER)
    assert caught.value.code is ErrorCode.BAD_VERSION
    assert isinstance(hello, Hello)


def _table() -> SessionTable:
    return SessionTable(LIMITS, SessionBudget(LIMITS.max_sessions))


def _open(sid: int = 1, sampling: SamplingParams = SamplingParams(), **fields: object) -> Open:
    return Open(sid=sid, prompt=fields.pop("prompt", [1, 2, 3]), sampling=sampling, max_new_tokens=8, **fields)  # type: ignore[arg-type]


def _code(call: object, *args: object) -> ErrorCode:
    with pytest.raises(ProtocolError) as caught:
        call(*args)  # type: ignore[operator]
    return caught.value.code


def test_session_table_follows_a_session_through_its_rounds() -> None:
    table = _table()
    table.open(_open())
    table.commit(1, 1)  # the Open's round: one token from the cloud
    table.verify(Verify(sid=1, seq=1, start=4, draft=Draft([5, 6])))
    table.commit(1, 3)
    table.verify(Verify(sid=1, seq=2, start=7, draft=Draft([])))
    assert table.close(1) and len(table) == 0 and table.budget.in_use == 0


def test_session_table_refuses_bad_requests() -> None:
    table = _table()
    table.open(_open())
    table.commit(1, 1)
    assert _code(table.open, _open()) is ErrorCode.DUPLICATE_SESSION
    assert _code(table.verify, Verify(sid=7, seq=1, start=4, draft=Draft([1]))) is ErrorCode.UNKNOWN_SESSION
    assert _code(table.verify, Verify(sid=1, seq=5, start=4, draft=Draft([1]))) is ErrorCode.OUT_OF_ORDER
    assert _code(table.verify, Verify(sid=1, seq=1, start=9, draft=Draft([1]))) is ErrorCode.OUT_OF_ORDER
    assert _code(table.verify, Verify(sid=1, seq=1, start=4, draft=Draft([100]))) is ErrorCode.INVALID_REQUEST
    assert _code(table.verify, Verify(sid=1, seq=1, start=4, draft=Draft([1] * 9))) is ErrorCode.INVALID_REQUEST
    assert (
        _code(table.verify, Verify(sid=1, seq=1, start=4, draft=Draft([1], [SparseDist([1], [1])])))
        is ErrorCode.INVALID_REQUEST
    )
    assert _code(table.open, _open(2, prompt=[])) is ErrorCode.INVALID_REQUEST
    assert _code(table.open, _open(2, prompt=[1] * 60)) is ErrorCode.CONTEXT_TOO_LONG
    assert _code(table.open, _open(2, prompt=[1, 150])) is ErrorCode.INVALID_REQUEST
    assert len(table) == 1 and table.budget.in_use == 1  # refusals leave nothing behind


def test_decode_bursts_take_their_turn_among_rounds() -> None:
    table = _table()
    table.open(_open())
    table.commit(1, 1)
    table.decode(Decode(sid=1, seq=1, start=4, count=10))
    table.commit(1, 7)  # the burst ended early (end of sequence): the cloud commits what it produced
    table.verify(Verify(sid=1, seq=2, start=11, draft=Draft([5])))
    table.commit(1, 2)
    assert _code(table.decode, Decode(sid=1, seq=3, start=12, count=1)) is ErrorCode.OUT_OF_ORDER
    assert _code(table.decode, Decode(sid=1, seq=4, start=13, count=1)) is ErrorCode.OUT_OF_ORDER
    assert _code(table.decode, Decode(sid=1, seq=3, start=13, count=60)) is ErrorCode.CONTEXT_TOO_LONG
    assert _code(table.decode, Decode(sid=9, seq=3, start=13, count=1)) is ErrorCode.UNKNOWN_SESSION
    table.open(_open(2, cloud_decodes=True))
    assert _code(table.decode, Decode(sid=2, seq=1, start=3, count=1)) is ErrorCode.UNEXPECTED_MESSAGE


def test_sampled_drafts_must_carry_a_valid_distribution_per_token() -> None:
    table = _table()
    bad_drafts = [
        Draft([3]),  # no q
        Draft([3], [SparseDist([4, 5], [1, 1])]),  # token outside its support
        Draft([3], [SparseDist([3, 3], [1, 1])]),  # repeated id
        Draft([3], [SparseDist([3, 4, 5, 6, 7], [1] * 5)]),  # support over the limit
        Draft([3], [SparseDist([3, 400], [1, 1])]),  # id outside the vocabulary
        Draft([3], [SparseDist([3], [1, 2])]),  # lengths differ
    ]
    for sid, draft in enumerate(bad_drafts, start=1):
        assert _code(table.open, _open(sid, SAMPLED, draft=draft)) is ErrorCode.INVALID_REQUEST
    table.open(_open(1, SAMPLED, draft=Draft([3], [SparseDist([3, 4], [2, 1])])))


def test_the_session_budget_is_shared_and_returned() -> None:
    budget = SessionBudget(2)
    first, second = SessionTable(LIMITS, budget), SessionTable(LIMITS, budget)
    first.open(_open(1))
    second.open(_open(1))
    assert _code(first.open, _open(2)) is ErrorCode.TOO_MANY_SESSIONS
    first.close(1)
    first.open(_open(2))
    assert not first.close(99)


def test_colocated_sessions_need_a_cloud_draft_and_cloud_decoding() -> None:
    assert _code(_table().open, _open(1, cloud_decodes=True, colocated_k=4)) is ErrorCode.INVALID_REQUEST
    with_draft = SessionTable(msgspec.structs.replace(LIMITS, colocated=True), SessionBudget(4))
    assert _code(with_draft.open, _open(1, colocated_k=4)) is ErrorCode.INVALID_REQUEST  # not cloud_decodes
    assert _code(with_draft.open, _open(1, cloud_decodes=True, colocated_k=99)) is ErrorCode.INVALID_REQUEST
    with_draft.open(_open(1, cloud_decodes=True, colocated_k=4))


def test_logprobs_are_bounded() -> None:
    assert _code(_table().open, _open(1, logprobs=LIMITS.max_logprobs + 1)) is ErrorCode.INVALID_REQUEST
    _table().open(_open(1, logprobs=LIMITS.max_logprobs))


def test_text_that_is_not_utf8_is_a_bad_frame() -> None:
    assert _code(decode, b"\x81\xa1t\xa1\xff") is ErrorCode.BAD_FRAME  # {"t": <byte 0xff>}, found by the fuzzer


def test_a_cloud_error_survives_pickling_with_its_code() -> None:
    """Edge work in other processes (the benchmarks') hands errors back through pickle."""
    import pickle

    from edgespec.transport.client import CloudError

    error = CloudError(Error(code=ErrorCode.CONTEXT_TOO_LONG, message="too long", sid=3))
    again = pickle.loads(pickle.dumps(error))
    assert again.code == ErrorCode.CONTEXT_TOO_LONG and str(again) == str(error)
