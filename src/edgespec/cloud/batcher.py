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
nothing extra.

Cloud-mode decoding is decoded ahead: when a decode step's result says the session goes on (not
its last token, not the end of the sequence, no Close), its next step is queued at once, so when
every session goes on the next forward call starts while the loop is still sending this call's
tokens, instead of after the last of them (the target would idle for that long every step). For
that the loop hands the GIL to the worker until the call is on the GPU: both threads need it, and
the loop's sends would otherwise hold the call back."""

from __future__ import annotations

import asyncio
import threading
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
HAND_OVER_S = 0.005  # the most the loop waits for the worker to put a call on the GPU (~0.2 ms)


class BatchObserver(Protocol):
    """Told when rounds arrive, batches launch and verdicts leave (`bench capacity` times the
    target's idle gaps with it); times are time.monotonic()."""

    def arrived(self, at: float) -> None: ...
    def launched(self, at: float) -> None: ...
    def released(self, at: float) -> None: ...


Follows = Callable[[RoundResult], bool]  # told a decode step's result: does the session's next step follow?


@dataclass
class _Round:
    session: TargetSession
    draft: Draft
    done: asyncio.Future[RoundResult]
    arrived: float
    follows: Follows | None = None


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
        self._ahead: dict[TargetSession, _Round] = {}  # decode steps queued before their session asked

    async def verify(self, session: TargetSession, draft: Draft, follows: Follows | None = None) -> RoundResult:
        """The round's result, from a batched forward call (see submit)."""
        return await self.submit(session, draft, follows)

    def submit(
        self, session: TargetSession, draft: Draft, follows: Follows | None = None
    ) -> asyncio.Future[RoundResult]:
        """Queue a round for a batched forward call; its result comes in the future returned
        (cancelled before its call runs, the round is dropped). For a decode step (nothing
        drafted), `follows` says from each result whether the session's next step comes: then it
        is queued at once (decoding ahead), and the session's next submit takes it."""
        queued = self._ahead.pop(session, None)
        if queued is None:
            queued = self._enqueue(session, draft, follows)
            self._start_next()
        return queued.done

    def _enqueue(self, session: TargetSession, draft: Draft, follows: Follows | None) -> _Round:
        now = time.monotonic()
        if (pace := self._paces.get(session)) is not None:
            pace.arrived(now)
        if self.observer is not None:
            self.observer.arrived(now)
        queued = _Round(session, draft, asyncio.get_running_loop().create_future(), now, follows)
        self._queue.append(queued)
        return queued

    def forget(self, session: TargetSession) -> None:
        """A session closed: its next round will not come, so a batch need not wait for it (and a
        step decoded ahead for it is dropped)."""
        if (ahead := self._ahead.pop(session, None)) is not None:
            ahead.done.cancel()
            if ahead in self._queue:
                self._queue.remove(ahead)
        if self._paces.pop(session, None) is not None:
            self._stop_waiting()
            self._start_next()

    def _start_next(self, hand_over: bool = False) -> None:
        """Launch a batch if one should go now, else make sure a timer decides later. Only the
        last missing round's arrival ends a wait early: the rest cost O(1) each."""
        if self._busy or not self._queue:
            return
        if len(self._queue) >= self.open_sessions():
            self._stop_waiting()
            self._launch(hand_over)
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

    def _launch(self, hand_over: bool = False) -> None:
        """Start the next forward call on the worker now (not when a task first runs); with
        `hand_over`, on a GPU, wait until the GPU has it."""
        if self.observer is not None:
            self.observer.launched(time.monotonic())
        batch = self._take_batch()
        self._busy = True
        forward = None
        if batch:
            queued = threading.Event()
            forward = self._start_forward(batch, queued)
            if hand_over and len(batch) > 1 and self.verifier.engine.device.type == "cuda":
                queued.wait(HAND_OVER_S)
        self._running = asyncio.create_task(self._run(batch, forward))

    def _start_forward(self, batch: list[_Round], queued: threading.Event) -> asyncio.Future[list[RoundResult]]:
        self.on_batch(len(batch))
        rounds = [(r.session, r.draft) for r in batch]
        try:
            if len(rounds) == 1:  # alone, a long prompt may be fed in pieces
                return self.worker.start(_verify_alone, self.verifier, *rounds[0])
            return self.worker.start(self.verifier.verify_many, rounds, queued)
        except RuntimeError as exc:  # the worker has shut down (the cloud is closing): fail the rounds
            refused: asyncio.Future[list[RoundResult]] = asyncio.get_running_loop().create_future()
            refused.set_exception(exc)
            return refused

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

    async def _run(self, batch: list[_Round], forward: asyncio.Future[list[RoundResult]] | None) -> None:
        try:
            if forward is not None:
                await self._conclude(batch, forward)
        finally:
            self._busy = False
            self._idle_since = time.monotonic()
            if len(self._queue) >= self.open_sessions():
                # Every open session's next step is queued (decoded ahead), so none of this batch
                # has ended: go now, before the loop sends this batch's tokens.
                self._start_next(hand_over=True)
            else:
                # Next turn of the loop: sessions this batch woke up run first, and a session
                # ending here queues its KV release on the worker before the next batch can take
                # a slot.
                asyncio.get_running_loop().call_soon(self._start_next)

    async def _conclude(self, batch: list[_Round], forward: asyncio.Future[list[RoundResult]]) -> None:
        try:
            results = await forward
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
            if r.follows is not None and r.follows(result):
                self._ahead[r.session] = self._enqueue(r.session, r.draft, r.follows)

    def _release(self, session: TargetSession, at: float) -> None:
        if (pace := self._paces.get(session)) is not None:
            pace.released = at
        else:
            self._paces[session] = _Pace(at)


def _verify_alone(verifier: Verifier, session: TargetSession, draft: Draft) -> list[RoundResult]:
    return [verifier.verify(session, draft)]
