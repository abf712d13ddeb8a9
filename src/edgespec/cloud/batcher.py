"""Verification batched across sessions, continuously: rounds that arrive while the target is
busy wait for it and then go together in one forward call. When the target is idle and fewer
rounds wait than sessions are open, the batch waits at most a short window for the others (edges
answer verdicts at slightly different times); a lone session never waits. A backend that cannot batch
(torch here) runs the batch's rounds one after another, which costs nothing extra."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from edgespec.cloud.verifier import RoundResult, TargetSession, Verifier
from edgespec.engine.worker import ModelWorker
from edgespec.protocol.messages import Draft


@dataclass
class _Round:
    session: TargetSession
    draft: Draft
    done: asyncio.Future[RoundResult]


class VerifyBatcher:
    def __init__(
        self,
        verifier: Verifier,
        worker: ModelWorker,
        open_sessions: Callable[[], int] = lambda: 1,
        window_s: float = 0.002,  # the longest a round waits for other sessions' rounds to join its batch
        on_batch: Callable[[int], None] = lambda size: None,
    ) -> None:
        self.verifier = verifier
        self.worker = worker
        self.open_sessions = open_sessions  # how many rounds could come at most
        self.window_s = window_s
        self.on_batch = on_batch  # told each batch's size (metrics)
        self._queue: list[_Round] = []
        self._busy = False
        self._window: asyncio.TimerHandle | None = None  # open while more rounds may arrive
        self._running: asyncio.Task[None] | None = None  # referenced, so the loop cannot drop it

    async def verify(self, session: TargetSession, draft: Draft) -> RoundResult:
        done: asyncio.Future[RoundResult] = asyncio.get_running_loop().create_future()
        self._queue.append(_Round(session, draft, done))
        self._start_next()
        return await done

    def _start_next(self) -> None:
        if self._busy or not self._queue:
            return
        everyone = len(self._queue) >= self.open_sessions()
        if self._window is not None:  # waiting for the others: the last of them ends the wait
            if everyone:
                self._window.cancel()
                self._close_window()
            return
        if not everyone and self.window_s > 0:  # others may be a moment behind
            self._window = asyncio.get_running_loop().call_later(self.window_s, self._close_window)
            return
        self._launch()

    def _close_window(self) -> None:
        self._window = None
        if not self._busy and self._queue:
            self._launch()

    def _launch(self) -> None:
        batch = self._take_batch()
        self._busy = True
        self._running = asyncio.create_task(self._run(batch))

    def _take_batch(self) -> list[_Round]:
        """Queued rounds in arrival order, as many as one forward call holds (at least one)."""
        room = self.verifier.engine.batch_tokens
        batch: list[_Round] = []
        while self._queue:
            size = self.verifier.new_tokens(self._queue[0].session, self._queue[0].draft)
            if batch and size > room:
                break
            batch.append(self._queue.pop(0))
            room -= size
        return [r for r in batch if not r.done.cancelled()]  # an edge that left: no work for it

    async def _run(self, batch: list[_Round]) -> None:
        try:
            if batch:
                self.on_batch(len(batch))
                await self._verify(batch)
        finally:
            self._busy = False
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
        for r, result in zip(batch, results, strict=True):
            if not r.done.done():
                r.done.set_result(result)
