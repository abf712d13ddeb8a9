"""How the cloud's verify batches form (cloud/batcher.py): rounds wait for the other sessions'
rounds at most a window, no longer than it takes the last of them to arrive, and not at all for
a session whose rounds usually come back later than the window; decoding sessions' next steps are
queued ahead, so the next forward call does not wait for this one's tokens to be sent."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from edgespec.cloud import batcher as batcher_module
from edgespec.cloud.batcher import VerifyBatcher
from edgespec.cloud.verifier import RoundResult
from edgespec.engine.worker import ModelWorker
from edgespec.protocol.messages import Draft


class RecordingVerifier:
    """Stands in for the target: records each forward call's sessions and answers at once."""

    def __init__(self, gpu_s: float = 0.0) -> None:
        self.gpu_s = gpu_s  # how long a call runs once queued (on a worker thread)
        self.engine = SimpleNamespace(batch_tokens=1000, device=SimpleNamespace(type="cuda"))  # hands over
        self.calls: list[list[str]] = []
        self.log: list[str] = []  # forward calls, and what the test's sessions did, in order

    def new_tokens(self, session: Any, draft: Draft) -> int:
        return len(draft.tokens) + 1

    def verify(self, session: str, draft: Draft) -> RoundResult:
        return self.verify_many([(session, draft)])[0]

    def verify_many(self, rounds: list[tuple[str, Draft]], queued: threading.Event | None = None) -> list[RoundResult]:
        self.calls.append(sorted(session for session, _ in rounds))
        self.log.append(f"call {len(self.calls)}")
        if queued is not None:
            queued.set()
        time.sleep(self.gpu_s)
        return [RoundResult(0, 1, 0.0, None) for _ in rounds]


class InlineWorker:
    """Runs each forward call as it is started: its result is ready before any task resumes."""

    def start(self, function: Any, *args: Any) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().create_future()
        future.set_result(function(*args))
        return future


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


STARTS_AFTER_S = 0.003  # a worker thread waiting this long for the GIL before it runs a call


class SlowToStart(ModelWorker):
    """A real worker thread that, like the cloud's while the loop holds the GIL, starts each call
    late."""

    def __init__(self, delay_s: float) -> None:
        super().__init__("target")
        self.delay_s = delay_s

    def start(self, function: Any, *args: Any) -> asyncio.Future[Any]:
        return super().start(lambda: (time.sleep(self.delay_s), function(*args))[1])


def decoding(sessions: int, count: int, leaving: str | None = None, gpu_s: float = 0.0) -> RecordingVerifier:
    """Sessions s0, s1, ... each decoding `count` tokens in cloud mode, every token "sent" (logged)
    after its step returns; `leaving` closes after its first token. With `gpu_s`, calls run that
    long on a real worker thread. The verifier, with its log."""
    verifier = RecordingVerifier(gpu_s)

    async def scenario() -> None:
        open_now = sessions
        worker = SlowToStart(STARTS_AFTER_S) if gpu_s else InlineWorker()
        batcher = VerifyBatcher(verifier, worker, lambda: open_now, 10.0)  # type: ignore[arg-type]

        async def decode(name: str) -> None:
            nonlocal open_now
            decided = 0

            def follows(result: RoundResult) -> bool:
                nonlocal decided
                decided += 1
                return decided < count

            for step in range(1, count + 1):
                await batcher.verify(name, Draft(tokens=[]), follows)  # type: ignore[arg-type]
                verifier.log.append(f"sent {name} {step}")
                if name == leaving:
                    open_now -= 1
                    batcher.forget(name)  # type: ignore[arg-type]
                    return

        await asyncio.gather(*(decode(f"s{i}") for i in range(sessions)))

    asyncio.run(scenario())
    return verifier


def test_decoding_sessions_next_steps_run_before_their_tokens_are_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a worker thread that starts late, as the cloud's does: the loop waits for the next call
    to be queued on the GPU before it sends the tokens of the last one (given time enough: a
    loaded test machine may start a thread later than the cloud's few milliseconds)."""
    monkeypatch.setattr(batcher_module, "HAND_OVER_S", 1.0)
    verifier = decoding(sessions=3, count=3, gpu_s=0.05)
    assert verifier.calls == [["s0", "s1", "s2"]] * 3  # no step past the last token
    for step in (1, 2):
        assert verifier.log.index(f"call {step + 1}") < verifier.log.index(f"sent s0 {step}"), verifier.log


def test_a_session_that_closes_gets_no_step_past_the_one_already_running() -> None:
    """s1 leaves after its first token; its second step was running by then (decoded ahead), and
    its result is dropped; no third is queued."""
    verifier = decoding(sessions=3, count=3, leaving="s1")
    assert verifier.calls == [["s0", "s1", "s2"], ["s0", "s1", "s2"], ["s0", "s2"]]


class ShutDownWorker:
    def start(self, function: Any, *args: Any) -> asyncio.Future[Any]:
        raise RuntimeError("cannot schedule new futures after shutdown")


def test_a_round_after_the_worker_has_shut_down_fails_and_does_not_hang() -> None:
    async def scenario() -> None:
        batcher = VerifyBatcher(RecordingVerifier(), ShutDownWorker(), lambda: 1, 10.0)  # type: ignore[arg-type]
        with pytest.raises(RuntimeError, match="shutdown"):
            await asyncio.wait_for(batcher.verify("s0", Draft(tokens=[1])), timeout=5)  # type: ignore[arg-type]

    asyncio.run(scenario())
