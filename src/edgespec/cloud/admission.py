"""Bounds on connections that have not yet proven the token. Without them a flood of idle
connections from one address holds a socket and a task each until the handshake timeout, and can
exhaust the cloud's file descriptors and crowd out every other edge's handshake."""

from __future__ import annotations

from collections import Counter


class HandshakeGate:
    def __init__(self, max_pending: int, max_pending_per_address: int) -> None:
        self.max_pending = max_pending
        self.max_pending_per_address = max_pending_per_address
        self._pending: Counter[str] = Counter()

    @property
    def pending(self) -> int:
        return self._pending.total()

    def try_enter(self, address: str) -> bool:
        """Whether a new connection from `address` may start its handshake (then `leave` once done)."""
        if self.pending >= self.max_pending or self._pending[address] >= self.max_pending_per_address:
            return False
        self._pending[address] += 1
        return True

    def leave(self, address: str) -> None:
        self._pending[address] -= 1
        if not self._pending[address]:
            del self._pending[address]
