"""Tensor parallelism on CPUs (gloo): the tiny target split over two ranks, each a process of its
own (heads, MLP features and the head's vocabulary split), computes the logits of the whole model,
through the same code the cloud runs; and a cloud split that way gives the target's greedy output
through the protocol."""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from edgespec.config import Mode, ModelConfig
from edgespec.engine.backends import open_parallel
from edgespec.engine.loading import load_model
from edgespec.engine.static_engine import StaticEngine
from edgespec.engine.tensor_parallel import RANK_LOST_EXIT, MirroredEngine, Rank, RankWatch, collectives, join, leave
from edgespec.processes import CLOUD_READY, cloud_process, free_port, started_process
from tests.conftest import TinyPair
from tests.integration.test_greedy_equality import MAX_TOKENS, PROMPTS, generate_all, target_greedy

PROMPT = list(range(5, 40))


def test_two_ranks_give_the_logits_of_one(tiny_pair: TinyPair) -> None:
    config = ModelConfig(str(tiny_pair.target), device="cpu", threads=1, engine="static")
    whole = StaticEngine(load_model(tiny_pair.target, config))
    session = whole.new_session()
    expected = [whole.forward(session, PROMPT, len(PROMPT))]
    whole.truncate(session, 30)
    expected.append(whole.forward(session, [*PROMPT[30:33], 11, 12], 5))  # a verify after a rejection

    engine, _ = open_parallel(config, world=2, max_sessions=4)
    assert isinstance(engine, MirroredEngine)
    try:
        assert engine.local.model.shape.heads == 2 and engine.local.model.shape.kv_heads == 1  # half of each
        assert engine.local.model.lm_head.shape[0] * 2 == whole.vocab_size  # and half of the vocabulary
        session = engine.new_session()
        got = [engine.forward(session, PROMPT, len(PROMPT))]
        engine.truncate(session, 30)
        got.append(engine.forward(session, [*PROMPT[30:33], 11, 12], 5))
        engine.release(session)
    finally:
        engine.close()
    for ours, theirs in zip(got, expected, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_a_cloud_split_over_two_ranks_gives_the_targets_greedy_output(tiny_pair: TinyPair) -> None:
    args = ("--engine", "static", "--tensor-parallel-size", "2", "--threads", "1")
    with cloud_process(tiny_pair.target, *args) as port:
        outputs = asyncio.run(generate_all(port, tiny_pair.draft, [(Mode.SPEC, 3, True), (Mode.CLOUD, 0, False)]))
    for prompt_text in PROMPTS:
        expected = target_greedy(tiny_pair, prompt_text)
        assert outputs[(Mode.SPEC, 3, True, prompt_text)] == expected
        assert outputs[(Mode.CLOUD, 0, False, prompt_text)] == expected
    assert len(expected) == MAX_TOKENS


def test_a_rank_that_dies_is_noticed_and_fails_the_next_call_clearly(tiny_pair: TinyPair) -> None:
    config = ModelConfig(str(tiny_pair.target), device="cpu", threads=1, engine="static")
    lost: queue.Queue[tuple[int, int]] = queue.Queue()
    engine, _ = open_parallel(config, world=2, max_sessions=4, on_rank_lost=lambda *rank: lost.put(rank))
    assert isinstance(engine, MirroredEngine)
    try:
        session = engine.new_session()
        engine.forward(session, PROMPT, 1)
        follower = engine._followers[0]
        follower.kill()
        assert lost.get(timeout=10) == (1, -signal.SIGKILL)
        with pytest.raises(RuntimeError, match="tensor-parallel rank 1 has exited"):
            engine.forward(session, [11, 12], 2)
    finally:
        engine.close()


def test_a_cloud_whose_rank_dies_exits_saying_so(tiny_pair: TinyPair, tmp_path: Path) -> None:
    """A step the rank was in could never end (on GPUs its twins wait for it in their kernels), and
    no later one can run: the cloud exits, and its edges fail over or apply their loss policy."""
    log = tmp_path / "cloud.log"
    args = ["cloud", "--model", str(tiny_pair.target), "--port", "0", "--engine", "static"]
    with started_process([*args, "--tensor-parallel-size", "2", "--threads", "1"], CLOUD_READY, log) as cloud:
        children = Path(f"/proc/{cloud.process.pid}/task/{cloud.process.pid}/children").read_text().split()
        assert len(children) == 1, "the cloud started its one other rank"
        os.kill(int(children[0]), signal.SIGKILL)
        assert cloud.process.wait(timeout=30) == RANK_LOST_EXIT
    assert "tensor-parallel rank 1 has exited" in log.read_text()


def test_a_rank_that_exits_before_the_group_forms_is_reported_at_once() -> None:
    """Rank 0 would otherwise wait for it in the group's start-up, for up to its ten-minute timeout."""
    lost: queue.Queue[tuple[int, int]] = queue.Queue()
    follower = subprocess.Popen([sys.executable, "-c", "raise SystemExit(7)"], stdin=subprocess.PIPE)
    watch = RankWatch([follower], on_rank_lost=lambda *rank: lost.put(rank))
    try:
        assert lost.get(timeout=10) == (1, 7)
    finally:
        watch.stop()
        assert follower.stdin is not None
        follower.stdin.close()


def test_ranks_that_can_hold_different_numbers_of_sessions_settle_on_the_fewest(tiny_pair: TinyPair) -> None:
    """Each rank must hold the same sessions in the same slots (and on GPUs capture the same graphs),
    though their free memory, and the slots it holds, may differ: here rank 1 can hold four, rank 0
    eight."""
    context = torch.multiprocessing.get_context("spawn")
    results = context.SimpleQueue()
    port = free_port()
    ranks = [context.Process(target=_sessions_held, args=(Rank(r, 2, port), tiny_pair.target, 8 >> r, results))
             for r in range(2)]  # fmt: skip
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout=60)
    assert sorted(results.get() for _ in ranks) == [(0, 4), (1, 4)]


def _sessions_held(rank: Rank, target: Path, sessions: int, results: Any) -> None:
    join(rank, "cpu")
    model = load_model(target, ModelConfig(str(target), device="cpu", threads=1, engine="static"))
    engine = StaticEngine(model, max_sessions=sessions, parallel=collectives(rank))
    results.put((rank.rank, engine.max_sessions))
    leave(engine)


def test_a_cloud_split_over_two_ranks_stops_cleanly_on_sigterm(tiny_pair: TinyPair, tmp_path: Path) -> None:
    """What systemd and `docker stop` send: the ranks leave their group and every process exits 0."""
    log = tmp_path / "cloud.log"
    args = ["cloud", "--model", str(tiny_pair.target), "--port", "0", "--engine", "static"]
    with started_process([*args, "--tensor-parallel-size", "2", "--threads", "1"], CLOUD_READY, log) as cloud:
        children = Path(f"/proc/{cloud.process.pid}/task/{cloud.process.pid}/children").read_text().split()
        cloud.process.send_signal(signal.SIGTERM)
        assert cloud.process.wait(timeout=60) == 0, log.read_text()[-2000:]
    assert "SIGTERM: closing" in log.read_text()
    assert not any(Path(f"/proc/{child}").exists() for child in children), "the other rank has exited too"
