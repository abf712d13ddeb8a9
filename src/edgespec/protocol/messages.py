"""Every message that crosses the edge–cloud link, as msgspec tagged structs.

The tag (field `t`) names the message; unknown tags, unknown fields and out-of-range values are
refused by the decoder. The full specification is docs/protocol.md.
"""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from edgespec.config import Limits, SamplingParams

PROTOCOL_VERSION = 1
MICROSECONDS_PER_SECOND = 1_000_000  # the unit of Verdict.verify_us

TokenId = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
SessionId = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
Count = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
Weight = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Nonce = Annotated[bytes, msgspec.Meta(min_length=16, max_length=64)]
Digest = Annotated[bytes, msgspec.Meta(max_length=64)]
ShortText = Annotated[str, msgspec.Meta(max_length=256)]


class ErrorCode(enum.Enum):
    BAD_FRAME = "bad_frame"  # undecodable body, unknown tag, field out of range
    FRAME_TOO_LARGE = "frame_too_large"
    BAD_VERSION = "bad_version"
    AUTH_FAILED = "auth_failed"
    TOKENIZER_MISMATCH = "tokenizer_mismatch"
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    UNEXPECTED_MESSAGE = "unexpected_message"  # a valid message in the wrong place
    UNKNOWN_SESSION = "unknown_session"
    DUPLICATE_SESSION = "duplicate_session"
    TOO_MANY_SESSIONS = "too_many_sessions"
    OUT_OF_ORDER = "out_of_order"  # seq or start position disagrees with the session
    INVALID_REQUEST = "invalid_request"  # token id, k, draft distribution out of limits
    CONTEXT_TOO_LONG = "context_too_long"
    SESSION_EXPIRED = "session_expired"
    INTERNAL = "internal"


class Base(msgspec.Struct, frozen=True, tag_field="t", forbid_unknown_fields=True):
    pass


class TokenizerId(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Identifies a tokenizer: a human name and a digest of everything that maps text to ids."""

    name: ShortText
    fingerprint: ShortText


class SparseDist(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A draft distribution on its support: q(ids[i]) = weights[i] / sum(weights)."""

    ids: list[TokenId]
    weights: list[Weight]


class TokenLogprobs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The target's log-probabilities (raw logits, before temperature and top-k/top-p) at one
    output position: the chosen token's and the `n` most likely tokens'."""

    logprob: float
    top_ids: list[TokenId]
    top_logprobs: list[float]


class Draft(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A block of drafted tokens; `q` (one per token) is present exactly when sampling."""

    tokens: list[TokenId]
    q: list[SparseDist] | None = None


# --- handshake ---------------------------------------------------------------------------------


class Challenge(Base, frozen=True, tag="challenge"):
    version: int
    nonce: Nonce


class Hello(Base, frozen=True, tag="hello"):
    version: int
    nonce: Nonce
    proof: Digest
    tokenizer: TokenizerId
    agent: ShortText = ""


class Welcome(Base, frozen=True, tag="welcome"):
    proof: Digest
    tokenizer: TokenizerId
    limits: Limits
    model: ShortText
    eos_token_ids: list[TokenId]
    chat_template: str | None = None
    numerics: ShortText = ""  # how the target's backend computes: exact, or what may differ


# --- sessions ----------------------------------------------------------------------------------


class Open(Base, frozen=True, tag="open"):
    """Start a session. In spec mode the cloud prefills and verifies `draft` in one pass."""

    sid: SessionId
    prompt: list[TokenId]
    sampling: SamplingParams
    max_new_tokens: Count
    cloud_decodes: bool = False  # True: cloud mode, the cloud streams its own tokens
    ignore_eos: bool = False
    draft: Draft | None = None
    logprobs: Count | None = None  # report TokenLogprobs with this many top tokens per output token
    colocated_k: Count | None = None  # with cloud_decodes: speculate in the cloud with its own draft, k tokens


class Verify(Base, frozen=True, tag="verify"):
    """Verify `draft`, whose first token sits at absolute position `start`."""

    sid: SessionId
    seq: Count
    start: Count
    draft: Draft


class Verdict(Base, frozen=True, tag="verdict"):
    """The first `accepted` draft tokens stand, followed by the cloud's `token`."""

    sid: SessionId
    seq: Count
    accepted: Count
    token: TokenId
    verify_us: Count = 0  # time the cloud spent on this round's forward pass
    logprobs: list[TokenLogprobs] | None = None  # one per committed token, when the Open asked


class Decode(Base, frozen=True, tag="decode"):
    """A spec-mode session hands the cloud the pen for a while: decode up to `count` tokens from
    absolute position `start` and stream them as Tokens frames, the last with `done`. The edge
    sends it when cloud decoding beats speculation (a slow link); the next Verify follows on."""

    sid: SessionId
    seq: Count
    start: Count
    count: Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]
    ignore_eos: bool = False


class Tokens(Base, frozen=True, tag="tokens"):
    """Cloud mode (or a Decode burst): tokens the cloud decoded; `done` ends the stream."""

    sid: SessionId
    tokens: list[TokenId]
    done: bool = False
    logprobs: list[TokenLogprobs] | None = None  # one per token, when the Open asked


class Close(Base, frozen=True, tag="close"):
    sid: SessionId


class Ping(Base, frozen=True, tag="ping"):
    nonce: Count


class Pong(Base, frozen=True, tag="pong"):
    nonce: Count


class Error(Base, frozen=True, tag="error"):
    code: ErrorCode
    message: str
    sid: SessionId | None = None


Message = Challenge | Hello | Welcome | Open | Verify | Verdict | Decode | Tokens | Close | Ping | Pong | Error
