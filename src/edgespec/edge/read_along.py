"""While the cloud decodes a burst, the draft reads along.

The edge is idle during a burst, so its draft model feeds on the tokens as they arrive. Two gains:
the draft's KV is current when rounds resume (no catch-up prefill then), and each token the draft
would have guessed right or wrong is an acceptance observation, so the controller's estimate stays
fresh. Without it the controller could never leave burst mode: an unlucky, stale acceptance
estimate would keep predicting that rounds lose, and no round would run to correct it.

It reads in batches, at most DUTY of the time, so that a fast stream of tokens is never slowed by
the edge's own compute. The observations are exact for greedy decoding (a round of k drafts accepts the draft's greedy
guesses while they match the target's tokens); for sampling, agreement of the draft's most likely
token with the target's sample stands in for the acceptance probability.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from edgespec.edge.controller import SpecController
from edgespec.edge.drafter import Drafter
from edgespec.edge.request import Decoding
from edgespec.engine.worker import ModelWorker

DUTY = 0.25  # at most this share of the edge's time goes to reading along: the stream comes first


class PseudoRounds:
    """Turns a stream of guessed-right / guessed-wrong into the rounds of k drafts it implies:
    a round accepts matches until a miss (the target's token replaces it) or k matches (the next
    token is the target's bonus, which no draft guesses)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self._run = 0
        self._skip_bonus = False

    def feed(self, matches: list[bool]) -> list[int]:
        """Accepted counts of the rounds completed by these matches."""
        rounds = []
        for match in matches:
            if self._skip_bonus:
                self._skip_bonus = False
            elif not match:
                rounds.append(self._run)
                self._run = 0
            else:
                self._run += 1
                if self._run == self.k:
                    rounds.append(self.k)
                    self._run, self._skip_bonus = 0, True
        return rounds

    def open_run(self) -> int:
        """Matches of the round still open. When reading stops they must still count (as accepted
        positions, the next one unknown): dropping them would keep only the rounds that ended in a
        miss, and so underestimate acceptance."""
        return self._run


class ReadAlong:
    """A background task that feeds a burst's tokens to the draft and scores its guesses."""

    def __init__(self, state: Decoding, drafter: Drafter, worker: ModelWorker, controller: SpecController) -> None:
        self._state = state
        self._drafter = drafter
        self._worker = worker
        self._controller = controller
        self._rounds = PseudoRounds(controller.max_k)
        self._guesses: dict[int, int] = {}  # position → the draft's greedy guess for it
        self._scored = len(state.context)  # the burst's first position
        self._arrived = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    def tokens_arrived(self) -> None:
        """Call once the burst's latest tokens are in the request's context."""
        self._arrived.set()

    async def stop(self) -> None:
        """Stop reading; a forward already running finishes on the worker, its result unused."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if accepted := self._rounds.open_run():
            self._controller.acceptance.observe(accepted, accepted)

    async def _run(self) -> None:
        state = self._state
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            context = list(state.context)
            started = time.perf_counter()
            first, guesses = await self._worker.run(self._drafter.read_along, state.kv, context)
            self._guesses.update(enumerate(guesses, start=first))
            self._score(context)
            # Tokens that arrive meanwhile wait for the next read, which takes them all in one forward.
            await asyncio.sleep((time.perf_counter() - started) * (1 - DUTY) / DUTY)

    def _score(self, context: list[int]) -> None:
        matches = []
        while self._scored < len(context) and self._scored in self._guesses:
            matches.append(self._guesses.pop(self._scored) == context[self._scored])
            self._scored += 1
        for accepted in self._rounds.feed(matches):
            self._controller.acceptance.observe(self._rounds.k, accepted)
