"""Drives a cloud's session tables with whatever messages a fuzzer makes, as the cloud does: each
message is applied, and the only failure allowed is a ProtocolError the cloud can send back."""

from __future__ import annotations

from edgespec.config import Limits
from edgespec.protocol.codec import ProtocolError
from edgespec.protocol.messages import Close, ErrorCode, Message, Open, Verify
from edgespec.protocol.sessions import SessionBudget, SessionTable

LIMITS = Limits(max_k=4, max_sessions=3, max_context=64, max_draft_support=4, vocab_size=50)
SESSION_ERRORS = {
    ErrorCode.DUPLICATE_SESSION, ErrorCode.UNKNOWN_SESSION, ErrorCode.TOO_MANY_SESSIONS,
    ErrorCode.OUT_OF_ORDER, ErrorCode.INVALID_REQUEST, ErrorCode.CONTEXT_TOO_LONG,
    ErrorCode.UNEXPECTED_MESSAGE,
}  # fmt: skip


class TwoEdges:
    """Two edge connections' tables sharing one cloud budget."""

    def __init__(self) -> None:
        self.budget = SessionBudget(LIMITS.max_sessions)
        self.tables = [SessionTable(LIMITS, self.budget), SessionTable(LIMITS, self.budget)]

    def apply(self, connection: int, message: Message) -> None:
        table = self.tables[connection % 2]
        try:
            if isinstance(message, Open):
                table.open(message)
                table.commit(message.sid, 1)  # the opening round's verdict
            elif isinstance(message, Verify):
                table.verify(message)
                table.commit(message.sid, 1)
            elif isinstance(message, Close):
                table.close(message.sid)
        except ProtocolError as exc:
            assert exc.code in SESSION_ERRORS, exc.code
        assert self.budget.in_use == sum(len(t) for t in self.tables) <= LIMITS.max_sessions
