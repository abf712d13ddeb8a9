"""A cloud link that heals itself: it watches the connection with keep-alive pings, and when the
link drops it reconnects in the background with exponential backoff. Requests ask it for the
current link and decide by their loss policy what to do while there is none."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from edgespec.config import LinkConfig
from edgespec.protocol.messages import TokenizerId, Welcome
from edgespec.transport.client import CloudLink, LinkError

log = logging.getLogger("edgespec.edge")


@dataclass(frozen=True)
class Backoff:
    initial_s: float = 0.1
    max_s: float = 2.0
    factor: float = 2.0

    def delays(self) -> Iterator[float]:
        """Growing waits between attempts, jittered so many edges do not retry in lockstep."""
        delay = self.initial_s
        while True:
            yield delay * random.uniform(0.5, 1.0)
            delay = min(delay * self.factor, self.max_s)


class LinkState(enum.Enum):
    UP = "up"
    DOWN = "down"  # reconnecting in the background
    CLOSED = "closed"


class LinkEvents(Protocol):
    """What a resilient link reports (metrics implement it)."""

    def link_up(self, reconnect: bool) -> None: ...
    def link_lost(self) -> None: ...
    def rtt(self, seconds: float) -> None: ...


class NoEvents:
    """Reports nothing: a link without metrics."""

    def link_up(self, reconnect: bool) -> None:
        pass

    def link_lost(self) -> None:
        pass

    def rtt(self, seconds: float) -> None:
        pass


class CloudLinks(Protocol):
    """The edge's way to its cloud or clouds: one ResilientLink, or a CloudPool of several."""

    @property
    def address(self) -> str: ...
    @property
    def welcome(self) -> Welcome | None: ...
    @property
    def reconnects(self) -> int: ...
    @property
    def last_error(self) -> str | None: ...
    @property
    def state(self) -> LinkState: ...
    async def start(self, require: bool) -> None: ...
    def pick(self) -> CloudLink | None: ...
    async def wait_up(self, timeout_s: float) -> CloudLink | None: ...
    async def close(self) -> None: ...


class ResilientLink:
    def __init__(
        self,
        config: LinkConfig,
        tokenizer: TokenizerId,
        events: LinkEvents | None = None,
        backoff: Backoff = Backoff(),
        keepalive_s: float = 5.0,
    ) -> None:
        self.config = config
        self.events: LinkEvents = events or NoEvents()
        self.reconnects = 0
        self.last_error: str | None = None
        self.welcome: Welcome | None = None  # from the latest handshake; outlives the link
        self._tokenizer = tokenizer
        self._backoff = backoff
        self._keepalive_s = keepalive_s
        self._link: CloudLink | None = None
        self._up = asyncio.Event()
        self._closed = False
        self._supervisor: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    @property
    def state(self) -> LinkState:
        if self._closed:
            return LinkState.CLOSED
        return LinkState.UP if self.link is not None else LinkState.DOWN

    @property
    def link(self) -> CloudLink | None:
        """The link if it is up now."""
        return self._link if self._link is not None and self._link.connected else None

    def pick(self) -> CloudLink | None:
        """The link for a new session: this one, if it is up."""
        return self.link

    async def start(self, require: bool) -> None:
        """Connect once now (raising LinkError if `require`), then keep the link up in the background."""
        try:
            self._adopt(await CloudLink.connect(self.config, self._tokenizer), reconnect=False)
        except LinkError as exc:
            if require:
                raise
            self.last_error = str(exc)
            log.warning("%s; retrying in the background", exc)
        self._supervisor = asyncio.create_task(self._supervise())

    async def wait_up(self, timeout_s: float) -> CloudLink | None:
        """The link, waiting up to `timeout_s` for it to come back; None if it does not."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._up.wait(), timeout_s)
        return self.link

    async def close(self) -> None:
        self._closed = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        if self._link is not None:
            await self._link.close()

    def _adopt(self, link: CloudLink, reconnect: bool) -> None:
        self._link = link
        self.welcome = link.welcome
        self.last_error = None
        self._up.set()
        self.events.link_up(reconnect)

    async def _supervise(self) -> None:
        while True:
            if self.link is not None:
                await self._watch(self.link)
            await self._reconnect()

    async def _watch(self, link: CloudLink) -> None:
        """Ping every keep-alive interval until the link drops; a silent link is dropped here."""
        lost = asyncio.create_task(link.wait_lost())
        try:
            while not lost.done():
                await asyncio.wait({lost}, timeout=self._keepalive_s)
                if lost.done():
                    break
                try:  # a pong overdue by one interval means a dead peer or a cut path
                    self.events.rtt(await link.ping(timeout_s=self._keepalive_s))
                except (LinkError, TimeoutError):
                    await link.close()
        finally:
            lost.cancel()  # when the supervisor itself is cancelled
        self._up.clear()
        self.last_error = lost.result()
        self.events.link_lost()
        log.warning("cloud link lost: %s; reconnecting", self.last_error)

    async def _reconnect(self) -> None:
        for delay in self._backoff.delays():
            try:
                link = await CloudLink.connect(self.config, self._tokenizer)
            except LinkError as exc:
                self.last_error = str(exc)
                await asyncio.sleep(delay)
                continue
            self.reconnects += 1
            self._adopt(link, reconnect=True)
            log.info("cloud link back up (reconnect %d)", self.reconnects)
            return
