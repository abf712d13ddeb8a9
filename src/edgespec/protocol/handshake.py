"""The connection handshake, sans-IO: mutual HMAC proof of a shared token, version and tokenizer.

    cloud → edge   Challenge(version, server_nonce)
    edge  → cloud  Hello(version, client_nonce, proof_c, tokenizer)
    cloud → edge   Welcome(proof_s, tokenizer, limits, ...)   or Error, then close

proof_c = HMAC-SHA256(token, "edgespec client" ‖ server_nonce ‖ client_nonce) and proof_s likewise
with "edgespec server" and the nonces swapped, so each side proves it knows the token without
sending it and neither proof can be replayed. A cloud without a token accepts any proof (it is
bound to loopback or told it runs on a trusted network); an edge with a token still checks the
cloud's proof, so it never talks to a cloud that does not know the token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from edgespec.protocol.codec import ProtocolError
from edgespec.protocol.messages import (
    PROTOCOL_VERSION,
    Challenge,
    ErrorCode,
    Hello,
    TokenizerId,
    Welcome,
)

NONCE_BYTES = 32


def _proof(token: str | None, role: bytes, first: bytes, second: bytes) -> bytes:
    key = (token or "").encode()
    return hmac.new(key, b"edgespec " + role + first + second, hashlib.sha256).digest()


def new_challenge() -> Challenge:
    return Challenge(version=PROTOCOL_VERSION, nonce=secrets.token_bytes(NONCE_BYTES))


def answer_challenge(challenge: Challenge, token: str | None, tokenizer: TokenizerId, agent: str = "") -> Hello:
    """The edge's reply to a Challenge."""
    if challenge.version != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.BAD_VERSION,
            f"cloud speaks protocol version {challenge.version}, this edge speaks {PROTOCOL_VERSION}",
        )
    nonce = secrets.token_bytes(NONCE_BYTES)
    proof = _proof(token, b"client", challenge.nonce, nonce)
    return Hello(version=PROTOCOL_VERSION, nonce=nonce, proof=proof, tokenizer=tokenizer, agent=agent)


def check_hello(challenge: Challenge, hello: Hello, token: str | None, tokenizer: TokenizerId) -> bytes:
    """The cloud's check of a Hello; returns the cloud's own proof for the Welcome."""
    if hello.version != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.BAD_VERSION,
            f"edge speaks protocol version {hello.version}, this cloud speaks {PROTOCOL_VERSION}",
        )
    if token and not hmac.compare_digest(hello.proof, _proof(token, b"client", challenge.nonce, hello.nonce)):
        raise ProtocolError(ErrorCode.AUTH_FAILED, "authentication failed: wrong or missing auth token")
    if hello.tokenizer.fingerprint != tokenizer.fingerprint:
        raise ProtocolError(ErrorCode.TOKENIZER_MISMATCH, tokenizer_mismatch(draft=hello.tokenizer, target=tokenizer))
    return _proof(token, b"server", hello.nonce, challenge.nonce)


def check_welcome(challenge: Challenge, hello: Hello, welcome: Welcome, token: str | None) -> None:
    """The edge's check that the cloud knows the token too."""
    expected = _proof(token, b"server", hello.nonce, challenge.nonce)
    if token and not hmac.compare_digest(welcome.proof, expected):
        raise ProtocolError(ErrorCode.AUTH_FAILED, "the cloud could not prove it knows the auth token")


def tokenizer_mismatch(draft: TokenizerId, target: TokenizerId) -> str:
    return (
        f"tokenizer mismatch: the draft's tokenizer {draft.name!r} (fingerprint {draft.fingerprint}) "
        f"differs from the target's {target.name!r} (fingerprint {target.fingerprint}); "
        "speculative decoding needs a draft that shares the target's vocabulary"
    )
