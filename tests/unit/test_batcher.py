"""How the cloud's verify batches form (cloud/batcher.py): rounds wait for the other sessions'
rounds at most a window, and no longer than it takes the last of them to arrive."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

from edgespec.cloud.batcher import VerifyBatcher
from edgespec.cloud.verifier import RoundResult
from edgespec.protocol.messages import Draft


class RecordingVerifier:
    """Stands in for the target: records each forward call's sessions and answers at once."""

    def __init__(self) -> None:
        self.engine = SimpleNamespace(batch_tokens=1000)
        self.calls: list[list[str]] = []

    def new_tokens(self, session: Any, draft: Draft) -> int:
        return len(draft.tokens) + 1

    def verify(self, session: str, draft: Draft) -> RoundResult:
        return self.verify_many([(session, draft)])[0]

    def verify_many(self, rounds: list[tuple[str, Draft]]) -> list[RoundResult]:
        self.calls.append([session for session, _ in rounds])
        return [RoundResult(0, 1, 0.0, None) for _ in rounds]


class InlineWorker:
    async def run(self, function: Any, *args: Any) -> Any:
        return function(*args)


def batches(open_sessions: int, window_s: float, arriving: list[float]) -> tuple[list[list[str]], float]:
    """Rounds of sessions s0, s1, ... queued at the given delays; the calls made and the seconds
    until every round had its verdict."""
    verifier = RecordingVerifier()

    async def scenario() -> float:
        batcher = VerifyBatcher(verifier, InlineWorker(), lambda: open_sessions, window_s)  # type: ignore[arg-type]

        async def one(index: int, delay: float) -> None:
            await asyncio.sleep(delay)
            await batcher.verify(f"s{index}", Draft(tokens=[1, 2]))  # type: ignore[arg-type]

        started = time.monotonic()
        await asyncio.gather(*(one(i, delay) for i, delay in enumerate(arriving)))
        return time.monotonic() - started

    seconds = asyncio.run(scenario())
    return verifier.calls, seconds


def test_the_last_session_to_arrive_ends_the_wait() -> None:
    calls, seconds = batches(open_sessions=3, window_s=10.0, arriving=[0.0, 0.01, 0.02])
    assert calls == [["s0", "s1", "s2"]]
    assert seconds < 1.0  # not the 10 s window


def test_a_session_that_does_not_come_is_waited_for_one_window_only() -> None:
    calls, seconds = batches(open_sessions=3, window_s=0.2, arriving=[0.0, 0.01])
    assert calls == [["s0", "s1"]]
    assert 0.2 <= seconds < 1.0


def test_a_lone_session_never_waits_and_a_zero_window_launches_at_once() -> None:
    assert batches(open_sessions=1, window_s=10.0, arriving=[0.0])[1] < 1.0
    calls, seconds = batches(open_sessions=3, window_s=0.0, arriving=[0.0, 0.05])
    assert calls == [["s0"], ["s1"]] and seconds < 1.0
