"""How the cloud's verify batches form (cloud/batcher.py): rounds wait for the other sessions'
rounds at most a window, no longer than it takes the last of them to arrive, and not at all for
a session whose rounds usually come back later than the window."""

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
        self.calls.append(sorted(session for session, _ in rounds))
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


def paced_calls(turnarounds: dict[str, float], rounds: int, window_s: float) -> list[list[str]]:
    """Sessions that each run `rounds` rounds, every next round `turnaround` seconds after the
    last verdict (an edge's network and drafting); the forward calls made."""
    verifier = RecordingVerifier()

    async def scenario() -> None:
        open_now = len(turnarounds)
        batcher = VerifyBatcher(verifier, InlineWorker(), lambda: open_now, window_s)  # type: ignore[arg-type]

        async def session(name: str, turnaround: float) -> None:
            nonlocal open_now
            for _ in range(rounds):
                await batcher.verify(name, Draft(tokens=[1]))  # type: ignore[arg-type]
                await asyncio.sleep(turnaround)
            open_now -= 1
            batcher.forget(name)  # type: ignore[arg-type]

        await asyncio.gather(*(session(name, t) for name, t in turnarounds.items()))

    asyncio.run(scenario())
    return verifier.calls


def test_sessions_that_come_back_within_the_window_are_gathered_every_round() -> None:
    calls = paced_calls({"a": 0.01, "b": 0.03, "c": 0.05}, rounds=6, window_s=0.2)
    assert calls == [["a", "b", "c"]] * 6


def test_a_session_slower_than_the_window_is_not_waited_for_once_its_pace_is_known() -> None:
    calls = paced_calls({"fast": 0.01, "slow": 0.4}, rounds=4, window_s=0.1)
    # The first two rounds learn the slow edge's pace (one full window spent waiting for it).
    # From then on, every round of the fast edge goes alone, without waiting.
    alone = [call for call in calls if call == ["fast"]]
    assert len(alone) == 3
    assert calls[0] == ["fast", "slow"]


def test_a_session_that_closes_is_no_longer_waited_for() -> None:
    """'b' comes back 0.2 s after each verdict, so after its pace is known 'a' waits for it; then
    'b' closes 0.05 s after its second verdict instead, which must end a's wait at once."""
    verifier = RecordingVerifier()
    a_waited: list[float] = []

    async def scenario() -> None:
        open_now = 2
        batcher = VerifyBatcher(verifier, InlineWorker(), lambda: open_now, 10.0)  # type: ignore[arg-type]

        async def a() -> None:
            for _ in range(3):
                started = time.monotonic()
                await batcher.verify("a", Draft(tokens=[1]))  # type: ignore[arg-type]
                a_waited.append(time.monotonic() - started)

        async def b() -> None:
            nonlocal open_now
            for pause in (0.2, 0.05):
                await batcher.verify("b", Draft(tokens=[1]))  # type: ignore[arg-type]
                await asyncio.sleep(pause)
            open_now -= 1
            batcher.forget("b")  # type: ignore[arg-type]

        await asyncio.gather(a(), b())

    asyncio.run(scenario())
    assert verifier.calls == [["a", "b"], ["a", "b"], ["a"]]
    assert a_waited[2] < 0.15  # b closed 0.05 s in; its due time (0.3 s) no longer counts
