"""Numbered places in a preallocated cache (static KV slots, llama.cpp sequences). A session
takes one at its first forward — on the model's worker thread, after any release queued there,
so a session closed just before has given its place back in time — and returns it on release."""

from __future__ import annotations

from edgespec.engine.base import KVSession


class SlotPool:
    def __init__(self, size: int, what: str, error: type[Exception]) -> None:
        self.size = size
        self._free = list(reversed(range(size)))
        self._what = what  # for the message when all are taken
        self._error = error

    def take(self, session: KVSession) -> int:
        """The session's place, taken now if it has none."""
        if session.cache is None:
            if not self._free:
                raise self._error(f"all {self.size} {self._what} are in use")
            session.cache = self._free.pop()
        return int(session.cache)

    def give_back(self, session: KVSession) -> int | None:
        """Return the session's place, if it took one; which it was."""
        place, session.cache = session.cache, None
        if place is not None:
            self._free.append(place)
        return place
