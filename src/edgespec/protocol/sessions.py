"""The cloud's table of sessions on one connection, sans-IO: what is open and what may come next.

Every check that depends only on the message and the session's bookkeeping lives here, so the
server's I/O code never sees a request it would have to second-guess.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgespec.config import Limits, SamplingParams
from edgespec.protocol.codec import ProtocolError
from edgespec.protocol.messages import Decode, Draft, ErrorCode, Open, Verify

OPEN_SEQ = 0  # the Open's verdict carries seq 0; Verify rounds count from 1


class SessionBudget:
    """Sessions open across all connections of one cloud, bounded by `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0

    def acquire(self, sid: int) -> None:
        if self.in_use >= self.limit:
            raise ProtocolError(ErrorCode.TOO_MANY_SESSIONS, f"the cloud already holds {self.limit} sessions", sid)
        self.in_use += 1

    def release(self) -> None:
        self.in_use -= 1


@dataclass
class SessionState:
    sampling: SamplingParams
    cloud_decodes: bool
    context_len: int  # committed tokens the cloud knows of: prompt + accepted + its own
    next_seq: int = OPEN_SEQ  # the Open itself is round 0; its verdict moves this to 1


class SessionTable:
    def __init__(self, limits: Limits, budget: SessionBudget) -> None:
        self.limits = limits
        self.budget = budget
        self._sessions: dict[int, SessionState] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, sid: int) -> bool:
        return sid in self._sessions

    def sids(self) -> list[int]:
        return list(self._sessions)

    def open(self, msg: Open) -> SessionState:
        if msg.sid in self._sessions:
            raise ProtocolError(ErrorCode.DUPLICATE_SESSION, f"session {msg.sid} is already open", msg.sid)
        self._check_prompt(msg)
        if msg.draft is not None:
            self._check_draft(msg.sid, msg.draft, msg.sampling, len(msg.prompt))
        if msg.colocated_k is not None:
            self._check_colocated(msg)
        self.budget.acquire(msg.sid)
        state = SessionState(msg.sampling, msg.cloud_decodes, context_len=len(msg.prompt))
        self._sessions[msg.sid] = state
        return state

    def verify(self, msg: Verify) -> SessionState:
        state = self._next_round(msg)
        self._check_draft(msg.sid, msg.draft, state.sampling, state.context_len)
        return state

    def decode(self, msg: Decode) -> SessionState:
        state = self._next_round(msg)
        if state.context_len + msg.count > self.limits.max_context:
            raise ProtocolError(ErrorCode.CONTEXT_TOO_LONG, "the decode burst runs past the cloud's context", msg.sid)
        return state

    def commit(self, sid: int, new_tokens: int) -> None:
        """Record a verdict: the context grew by `new_tokens` and the next round may come."""
        state = self._sessions[sid]
        state.context_len += new_tokens
        state.next_seq += 1

    def get(self, sid: int) -> SessionState:
        try:
            return self._sessions[sid]
        except KeyError:
            raise ProtocolError(ErrorCode.UNKNOWN_SESSION, f"no open session {sid}", sid) from None

    def close(self, sid: int) -> bool:
        """Forget a session; False if it was not open."""
        if self._sessions.pop(sid, None) is None:
            return False
        self.budget.release()
        return True

    def _next_round(self, msg: Verify | Decode) -> SessionState:
        """The session, if `msg` is its next round in order (spec mode only)."""
        state = self.get(msg.sid)
        if state.cloud_decodes:
            raise ProtocolError(
                ErrorCode.UNEXPECTED_MESSAGE, f"{type(msg).__name__} on a session the cloud decodes", msg.sid
            )
        if msg.seq != state.next_seq or msg.start != state.context_len:
            raise ProtocolError(
                ErrorCode.OUT_OF_ORDER,
                f"expected seq {state.next_seq} at position {state.context_len}, "
                f"got seq {msg.seq} at position {msg.start}",
                msg.sid,
            )
        return state

    def _check_prompt(self, msg: Open) -> None:
        if not msg.prompt:
            raise ProtocolError(ErrorCode.INVALID_REQUEST, "the prompt is empty", msg.sid)
        self._check_ids(msg.sid, msg.prompt)
        if msg.logprobs is not None and msg.logprobs > self.limits.max_logprobs:
            raise ProtocolError(
                ErrorCode.INVALID_REQUEST,
                f"logprobs {msg.logprobs} exceeds the limit {self.limits.max_logprobs}",
                msg.sid,
            )
        if len(msg.prompt) + max(msg.max_new_tokens, 1) > self.limits.max_context:
            raise ProtocolError(
                ErrorCode.CONTEXT_TOO_LONG,
                f"prompt of {len(msg.prompt)} tokens plus {msg.max_new_tokens} new tokens exceeds "
                f"the cloud's context of {self.limits.max_context}",
                msg.sid,
            )

    def _check_colocated(self, msg: Open) -> None:
        if not self.limits.colocated:
            raise ProtocolError(ErrorCode.INVALID_REQUEST, "this cloud has no draft model of its own", msg.sid)
        if not msg.cloud_decodes:
            raise ProtocolError(ErrorCode.INVALID_REQUEST, "co-located speculation needs cloud_decodes", msg.sid)
        if msg.colocated_k is not None and msg.colocated_k > self.limits.max_k:
            raise ProtocolError(
                ErrorCode.INVALID_REQUEST, f"k {msg.colocated_k} exceeds max k {self.limits.max_k}", msg.sid
            )

    def _check_draft(self, sid: int, draft: Draft, sampling: SamplingParams, context_len: int) -> None:
        k = len(draft.tokens)
        if k > self.limits.max_k:
            raise ProtocolError(
                ErrorCode.INVALID_REQUEST, f"draft of {k} tokens exceeds max k {self.limits.max_k}", sid
            )
        if context_len + k + 1 > self.limits.max_context:
            raise ProtocolError(ErrorCode.CONTEXT_TOO_LONG, "the draft runs past the cloud's context", sid)
        self._check_ids(sid, draft.tokens)
        if sampling.greedy:
            if draft.q is not None:
                raise ProtocolError(ErrorCode.INVALID_REQUEST, "a greedy draft carries no distributions", sid)
            return
        if draft.q is None or len(draft.q) != k:
            raise ProtocolError(ErrorCode.INVALID_REQUEST, "a sampled draft needs one distribution per token", sid)
        for token, dist in zip(draft.tokens, draft.q, strict=True):
            self._check_dist(sid, token, dist.ids, dist.weights)

    def _check_dist(self, sid: int, token: int, ids: list[int], weights: list[int]) -> None:
        if not 1 <= len(ids) <= self.limits.max_draft_support or len(weights) != len(ids):
            raise ProtocolError(ErrorCode.INVALID_REQUEST, "draft distribution has a bad support size", sid)
        if len(set(ids)) != len(ids):
            raise ProtocolError(ErrorCode.INVALID_REQUEST, "draft distribution repeats a token id", sid)
        self._check_ids(sid, ids)
        if token not in ids:
            raise ProtocolError(ErrorCode.INVALID_REQUEST, f"drafted token {token} lies outside its distribution", sid)

    def _check_ids(self, sid: int, ids: list[int]) -> None:
        vocab = self.limits.vocab_size
        if ids and max(ids) >= vocab:
            raise ProtocolError(
                ErrorCode.INVALID_REQUEST, f"token id {max(ids)} is outside the vocabulary of {vocab}", sid
            )
