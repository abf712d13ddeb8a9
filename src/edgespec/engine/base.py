"""The contract every model backend meets, and the KV bookkeeping built on it.

A backend runs forward passes over new tokens of a session whose KV cache it keeps, returns the
logits of the last positions, and can truncate the cache after a rejection. Forward passes are
synchronous: callers run them on the model's worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch


@dataclass
class KVSession:
    """A sequence's KV cache and the tokens it holds, in order."""

    cache: Any
    tokens: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Work:
    """New tokens for one session, and how many of the last positions need logits."""

    session: KVSession
    tokens: list[int]
    n_logits: int


class Engine(Protocol):
    numerics: str  # what its results equal, in a sentence for users
    batch_tokens: int  # most new tokens forward_many takes at once
    max_sessions: int  # sessions it can hold at once
    vocab_size: int
    max_context: int  # positions the model supports
    device: torch.device

    def new_session(self) -> KVSession: ...

    def forward(self, session: KVSession, tokens: list[int], n_logits: int) -> torch.Tensor:
        """Run `tokens` after the session's cache; logits of the last n_logits positions [n_logits, vocab]."""
        ...

    def forward_many(self, works: list[Work]) -> list[torch.Tensor]:
        """Several sessions' forwards, in one pass where the backend can (up to batch_tokens in all)."""
        ...

    def truncate(self, session: KVSession, length: int) -> None:
        """Drop everything after the first `length` tokens."""
        ...

    def release(self, session: KVSession) -> None: ...

    def close(self) -> None:
        """Free the model; no call may follow."""
        ...


def common_prefix_len(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:  # the usual case each round, compared in C rather than token by token
        return n
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def extend(engine: Engine, session: KVSession, context: list[int], extra: list[int], n_logits: int) -> torch.Tensor:
    """Logits [n_logits, vocab] for the last positions of `context + extra`, in one forward pass."""
    return engine.forward(session, missing_tokens(engine, session, context, extra), n_logits)


def missing_tokens(engine: Engine, session: KVSession, context: list[int], extra: list[int]) -> list[int]:
    """What a forward must run for `context + extra`: the cache keeps whatever prefix of `context`
    it already holds (at most all but the last token, whose logits are needed), the rest is new."""
    keep = min(common_prefix_len(session.tokens, context), len(context) - 1)
    if keep < len(session.tokens):
        engine.truncate(session, keep)
    return context[keep:] + extra
