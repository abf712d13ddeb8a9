"""Several clouds behind one edge (`--cloud host1:port,host2:port`).

Each cloud has its own self-healing link (ResilientLink). A new session goes to the healthy cloud
with the fewest sessions open on it and stays there; when that cloud is lost, the request re-opens
on another one with its whole committed sequence (the runtime's loss path), so the output goes on
exactly as before. Clouds must serve the same target: one announcing another model is not used.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from edgespec.config import LinkConfig
from edgespec.protocol.messages import TokenizerId, Welcome
from edgespec.transport.client import CloudLink, LinkError
from edgespec.transport.resilient import LinkEvents, LinkState, NoEvents, ResilientLink

log = logging.getLogger("edgespec.edge")


class PoolEvents(LinkEvents, Protocol):
    """What a pool reports beyond one link's events: each cloud's health and placements."""

    def cloud_up(self, address: str, up: bool) -> None: ...
    def placed(self, address: str) -> None: ...


class _NoPoolEvents(NoEvents):
    def cloud_up(self, address: str, up: bool) -> None:
        pass

    def placed(self, address: str) -> None:
        pass


def no_pool_events() -> PoolEvents:
    return _NoPoolEvents()


class _MemberEvents:
    """One cloud's link events, forwarded with its address."""

    def __init__(self, pool: CloudPool, address: str, events: PoolEvents) -> None:
        self._pool = pool
        self._address = address
        self._events = events

    def link_up(self, reconnect: bool) -> None:
        self._events.cloud_up(self._address, True)
        self._events.link_up(reconnect)

    def link_lost(self) -> None:
        self._events.cloud_up(self._address, False)
        if self._pool.state is not LinkState.UP:  # the edge as a whole lost its clouds
            self._events.link_lost()

    def rtt(self, seconds: float) -> None:
        self._events.rtt(seconds)


class CloudPool:
    def __init__(
        self, configs: list[LinkConfig], tokenizer: TokenizerId, events: PoolEvents, keepalive_s: float = 5.0
    ) -> None:
        if len({(c.host, c.port) for c in configs}) != len(configs):
            raise ValueError("each cloud address may be given once")
        self.members = [
            ResilientLink(c, tokenizer, _MemberEvents(self, f"{c.host}:{c.port}", events), keepalive_s=keepalive_s)
            for c in configs
        ]
        self._events = events
        self._model: str | None = None  # the target every cloud must serve: the first one seen
        self._refused: set[str] = set()  # clouds serving another target (reported once)
        self._closed = False

    @property
    def address(self) -> str:
        return ",".join(member.address for member in self.members)

    @property
    def welcome(self) -> Welcome | None:
        return next((m.welcome for m in self.members if m.welcome is not None), None)

    @property
    def reconnects(self) -> int:
        return sum(member.reconnects for member in self.members)

    @property
    def last_error(self) -> str | None:
        errors = [f"{m.address}: {m.last_error}" for m in self.members if m.last_error]
        return "; ".join(errors) or None

    @property
    def state(self) -> LinkState:
        if self._closed:
            return LinkState.CLOSED
        return LinkState.UP if self._usable() else LinkState.DOWN

    async def start(self, require: bool) -> None:
        """Dial every cloud; with `require`, at least one must answer."""
        await asyncio.gather(*(member.start(require=False) for member in self.members))
        if require and not self._usable():
            raise LinkError(f"no cloud is reachable: {self.last_error}")

    def pick(self) -> CloudLink | None:
        """The link for a new session: the usable cloud with the fewest sessions open."""
        usable = self._usable()
        if not usable:
            return None
        member, link = min(usable, key=lambda pair: pair[1].active_sessions)
        self._events.placed(member.address)
        return link

    async def wait_up(self, timeout_s: float) -> CloudLink | None:
        """A link, waiting up to `timeout_s` for any cloud to come back; None if none does."""
        waits = [asyncio.ensure_future(member.wait_up(timeout_s)) for member in self.members]
        try:
            for done in asyncio.as_completed(waits):
                if await done is not None:
                    break
        finally:
            for wait in waits:
                wait.cancel()
        return self.pick()

    def sessions(self) -> dict[str, int]:
        """Sessions open on each cloud (0 while it is down)."""
        return {m.address: m.link.active_sessions if m.link is not None else 0 for m in self.members}

    async def close(self) -> None:
        self._closed = True
        await asyncio.gather(*(member.close() for member in self.members))

    def _usable(self) -> list[tuple[ResilientLink, CloudLink]]:
        return [(m, m.link) for m in self.members if m.link is not None and self._same_target(m)]

    def _same_target(self, member: ResilientLink) -> bool:
        model = member.welcome.model if member.welcome is not None else None
        if self._model is None:
            self._model = model
        if model == self._model:
            return True
        if member.address not in self._refused:
            self._refused.add(member.address)
            log.error("cloud %s serves %r, not %r like the others: not used", member.address, model, self._model)
        return False
