"""Verification batched across sessions, continuously: rounds that arrive while the target is
busy wait for it and then go together in one forward call.

When the target is idle and not every open session's round is in, the batch waits for the missing
ones, but only as long as they are worth waiting for. Each session's pace is known: how long after
its verdict left its next round usually arrives (the edge's network and drafting). The batch waits
for the missing sessions due within the window (due: their usual turnaround plus a margin for
jitter), counted from when its oldest round could have run (it arrived, or the target became
free). So edges on a fast link are gathered into full batches (a forward call costs nearly the
same for one session as for thirty), while an edge on a slow link is not waited for at all. A
session with no pace yet (its first round) is given the whole window. A lone session never waits.
A backend that cannot batch (torch here) runs the batch's rounds one after another, which costs
nothing extra."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from edgespec.cloud.verifier import RoundResult, TargetSession, Verifier
from edgespec.config import DEFAULT_BATCH_WINDOW_S
from edgespec.engine.worker import ModelWorker
from edgespec.protocol.messages import Draft

DUE_MARGIN = 1.5  # a session is due this many of its usual turnarounds after its verdict left
PACE_WEIGHT = 0.3  # of the newest turnaround in a session's moving estimate


class BatchObserver(Protocol):
    """Told when rounds arrive, batches launch and verdicts leave (`bench capacity` times the
    target's idle gaps with it); times are time.monotonic()."""

    def arrived(self, at: float) -> None: ...
    def launched(self, at: float) -> None: ...
    def released(self, at: float) -> None: ...


@dataclass
class _Round:
    session: TargetSession
    draft: Draft
    done: asyncio.Future[RoundResult]
    arrived: float


@dataclass
class _Pace:
    """When a session's next round is due."""

    released: float  # when its last verdict left the target
    turnaround: float | None = None  # moving estimate: verdict out to next round in, seconds

    def due(self) -> float | None:
        return None if self.turnaround is None else self.released + DUE_MARGIN * self.turnaround

    def arrived(self, now: float) -> None:
        took = now - self.released
        self.turnaround = took if self.turnaround is None else self.turnaround + PACE_WEIGHT * (took - self.turnaround)


class VerifyBatcher:
    def __init__(
        self,
        verifier: Verifier,
        worker: ModelWorker,
        open_sessions: Callable[[], int] = lambda: 1,
        window_s: float = DEFAULT_BATCH_WINDOW_S,  # the longest a round waits for others to join its batch
        on_batch: Callable[[int], None] = lambda size: None,
    ) -> None:
        self.verifier = verifier
        self.worker = worker
        self.open_sessions = open_sessions  # how many rounds could come at most
        self.window_s = window_s
        self.on_batch = on_batch  # told each batch's size (metrics)
        self.observer: BatchObserver | None = None
        self._queue: list[_Round] = []
        self._paces: dict[TargetSession, _Pace] = {}  # sessions that had a round, while open
        self._busy = False
        self._idle_since = 0.0  # when the last batch ended: waiting for the target is not waiting for others
        self._window: asyncio.TimerHandle | None = None  # set while the batch waits for missing rounds
        self._running: asyncio.Task[None] | None = None  # referenced, so the loop cannot drop it

    async def verify(self, session: TargetSession, draft: Draft) -> RoundResult:
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        if (pace := self._paces.get(session)) is not None:
            pace.arrived(now)
        if self.observer is not None:
            self.observer.arrived(now)
        done: asyncio.Future[RoundResult] = loop.create_future()
        self._queue.append(_Round(session, draft, done, now))
        self._start_next()
        return await done

    def forget(self, session: TargetSession) -> None:
        """A session closed: its next round will not come, so a batch need not wait for it."""
        if self._paces.pop(session, None) is not None:
            self._stop_waiting()
            self._start_next()

    def _start_next(self) -> None:
        """Launch a batch if one should go now, else make sure a timer decides later. Only the
        last missing round's arrival ends a wait early: the rest cost O(1) each."""
        if self._busy or not self._queue:
            return
        if len(self._queue) >= self.open_sessions():
            self._stop_waiting()
            self._launch()
        elif self._window is None:
            self._decide()

    def _decide(self) -> None:
        self._window = None
        wait = self._worth_waiting() - time.monotonic()
        if wait > 0:
            self._window = asyncio.get_running_loop().call_later(wait, self._decide)
        elif not self._busy and self._queue:
            self._launch()

    def _stop_waiting(self) -> None:
        if self._window is not None:
            self._window.cancel()
            self._window = None

    def _worth_waiting(self) -> float:
        """Until when the queued rounds wait for the missing ones (a time past: not at all)."""
        missing = self.open_sessions() - len(self._queue)
        if missing <= 0:
            return 0.0
        limit = max(self._queue[0].arrived, self._idle_since) + self.window_s
        queued = {r.session for r in self._queue}
        dues = [pace.due() for session, pace in self._paces.items() if session not in queued]
        if len(dues) < missing or None in dues:  # a session with no pace yet: give it the window
            return limit
        return max((due for due in dues if due is not None and due <= limit), default=0.0)

    def _launch(self) -> None:
        if self.observer is not None:
            self.observer.launched(time.monotonic())
        batch = self._take_batch()
        self._busy = True
        self._running = asyncio.create_task(self._run(batch))

    def _take_batch(self) -> list[_Round]:
        """Queued rounds in arrival order, all that one forward call holds (the oldest always).
        A round too big for what is left (a prompt) waits for the next call; the rounds behind
        it still go now, or one long prompt would split a batch of thirty sessions in two."""
        room = self.verifier.engine.batch_tokens
        batch: list[_Round] = []
        later: list[_Round] = []
        for r in self._queue:
            size = self.verifier.new_tokens(r.session, r.draft)
            if batch and size > room:
                later.append(r)
                continue
            batch.append(r)
            room -= size
        self._queue = later
        return [r for r in batch if not r.done.cancelled()]  # an edge that left: no work for it

    async def _run(self, batch: list[_Round]) -> None:
        try:
            if batch:
                self.on_batch(len(batch))
                await self._verify(batch)
        finally:
            self._busy = False
            self._idle_since = time.monotonic()
            # Next turn of the loop, not now: sessions this batch woke up run first, and a session
            # ending here queues its KV release on the worker before the next batch can take a slot.
            asyncio.get_running_loop().call_soon(self._start_next)

    async def _verify(self, batch: list[_Round]) -> None:
        rounds = [(r.session, r.draft) for r in batch]
        try:
            if len(rounds) == 1:  # alone, a long prompt may be fed in pieces
                results = [await self.worker.run(self.verifier.verify, *rounds[0])]
            else:
                results = await self.worker.run(self.verifier.verify_many, rounds)
        except Exception as exc:
            for r in batch:
                if not r.done.done():
                    r.done.set_exception(exc)
            return
        released = time.monotonic()
        if self.observer is not None:
            self.observer.released(released)
        for r, result in zip(batch, results, strict=True):
            if r.done.cancelled():  # its session is gone (and forgotten)
                continue
            r.done.set_result(result)
            self._release(r.session, released)

    def _release(self, session: TargetSession, at: float) -> None:
        if (pace := self._paces.get(session)) is not None:
            pace.released = at
        else:
            self._paces[session] = _Pace(at)
