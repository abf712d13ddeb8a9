"""Tensor-parallel targets: one process per rank (per GPU, or per CPU rank with gloo), each holding
a shard of the static engine's model (engine/sharding.py) and running the same forward passes.

Rank 0 is the cloud. Its engine (MirroredEngine) sends every call that touches the model or the KV
cache (forward, truncate, release, close) to the other ranks before running it itself, so all
ranks run the same batches in the same order and meet in the same all-reduces. The other ranks
(`python -m edgespec.engine.tensor_parallel`, started by the cloud) repeat each call on their own
shard and discard the logits. torch.distributed carries the all-reduces (NCCL or peer memory on
GPUs, gloo on CPUs); the calls go down a pipe to each rank's standard input, as length-prefixed
MessagePack arrays: writing one costs the cloud microseconds where a broadcast over a gloo group
took ~0.3 ms of every step, and a rank that has died shows at the next call as a closed pipe.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import itertools
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, BinaryIO

import msgspec
import torch
import torch.distributed as dist

from edgespec.config import ModelConfig
from edgespec.engine.base import KVSession, Work
from edgespec.engine.sharding import Parallel
from edgespec.engine.static_engine import StaticEngine

log = logging.getLogger("edgespec.cloud")

STARTUP_TIMEOUT = timedelta(minutes=10)  # ranks load their model before meeting
PR_SET_PDEATHSIG = 1  # prctl: a follower dies with the cloud that started it
FOLLOWER_EXIT_S = 30
FOLLOWER_POLL_S = 0.5  # how often the cloud looks whether the other ranks still live
RANK_LOST_EXIT = 3  # the cloud's exit status when another rank has died under it
FRAME_HEADER = 4  # bytes of a call's length, before the call


@dataclass(frozen=True)
class Rank:
    rank: int
    world: int
    port: int  # where rank 0 listens for the group to form (loopback)

    def device(self, requested: str | None) -> str:
        """One GPU per rank on CUDA; CPU ranks share the CPU."""
        if requested is not None and requested.startswith("cuda"):
            return f"cuda:{self.rank}"
        return requested or ("cuda:" + str(self.rank) if torch.cuda.is_available() else "cpu")


def join(rank: Rank, device: str) -> None:
    """Form the group: NCCL between GPUs, gloo between CPU ranks."""
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend,
        init_method=f"tcp://127.0.0.1:{rank.port}",
        rank=rank.rank,
        world_size=rank.world,
        timeout=STARTUP_TIMEOUT,
    )


def leave(*engines: StaticEngine) -> None:
    """Close this rank's engines, then the group. NCCL will not destroy a communicator while a CUDA
    graph that captured one of its collectives lives (the graph holds a reference that only its
    destruction drops): it waits forever. So the graphs go first, those kept alive by cycles too."""
    for engine in engines:
        engine.close()
    gc.collect()
    if dist.get_backend() == "nccl":
        torch.cuda.synchronize()
    dist.destroy_process_group()


def all_reduce(x: torch.Tensor) -> torch.Tensor:
    dist.all_reduce(x)
    return x


def all_gather_last(x: torch.Tensor) -> torch.Tensor:
    """Every rank's x, concatenated along the last dimension in rank order."""
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=-1)


def collectives(rank: Rank) -> Parallel:
    return Parallel(rank.rank, rank.world, all_reduce, all_gather_last)


def sharded_engine(model_config: ModelConfig, rank: Rank, max_sessions: int) -> StaticEngine:
    """This rank's shard, ready to serve: loaded, in the group, its KV slots settled with the other
    ranks' (engine/static_engine.py), summing through peer memory on GPUs that reach each other's
    (engine/peer_sum.py; else NCCL), its graphs captured as a single GPU's are at start-up."""
    from edgespec.engine.fetch import resolve_model_path
    from edgespec.engine.loading import load_model

    device = rank.device(model_config.device)
    config = ModelConfig(model_config.name, device=device, dtype=model_config.dtype, threads=model_config.threads,
                         engine="static")  # fmt: skip
    model = load_model(resolve_model_path(config.name), config)
    join(rank, device)
    engine = StaticEngine(model, max_sessions, parallel=collectives(rank))
    if engine.device.type == "cuda":
        from edgespec.engine.peer_sum import connect  # Triton: GPU installs only

        connect(engine.model)
    engine.capture_ahead()  # every rank the same graphs in the same order: their collectives meet
    return engine


RankLost = Callable[[int, int], None]  # (rank, its exit status)


def exit_on_rank_lost(rank: int, status: int) -> None:
    """The cloud's answer to a rank's death: without it no step can run, and a step it was in never
    ends (its twins wait for it in their kernels), so exit with a clear word for the supervisor and
    the edges (they fail over to another cloud, or apply their link-loss policy)."""
    log.error("tensor-parallel rank %d has exited (status %d); the target cannot run without it: exiting", rank, status)
    logging.shutdown()
    os._exit(RANK_LOST_EXIT)


class RankWatch:
    """Watches ranks 1..world-1 from their start: one that exits while it is still needed (loading
    its shard, forming the group, serving) is reported at once, not when the group's start-up
    times out ten minutes later, or at the next call."""

    def __init__(self, followers: list[subprocess.Popen[bytes]], on_rank_lost: RankLost = exit_on_rank_lost) -> None:
        self._followers = followers
        self._on_rank_lost = on_rank_lost
        self._stopped = threading.Event()
        threading.Thread(target=self._watch, name="rank watch", daemon=True).start()

    def stop(self) -> None:
        """The ranks are told to leave now: their exits are expected."""
        self._stopped.set()

    def _watch(self) -> None:
        while not self._stopped.wait(FOLLOWER_POLL_S):
            for rank, follower in enumerate(self._followers, start=1):
                status = follower.poll()
                if status is not None and not self._stopped.is_set():
                    self._on_rank_lost(rank, status)
                    return


class MirroredEngine:
    """Rank 0's engine: the local shard, with every call repeated on the other ranks."""

    def __init__(self, local: StaticEngine, followers: list[subprocess.Popen[bytes]], watch: RankWatch) -> None:
        self.local = local
        self._followers = followers
        self._watch = watch
        self.numerics = f"{local.numerics}; tensor parallel over {dist.get_world_size()} ranks"
        self.vocab_size = local.vocab_size
        self.max_context = local.max_context
        self.max_sessions = local.max_sessions
        self.batch_tokens = local.batch_tokens
        self.device = local.device
        self._ids = itertools.count()
        self._sids: dict[int, int] = {}  # id(session) → the number the other ranks know it by

    def new_session(self) -> KVSession:
        session = self.local.new_session()
        self._sids[id(session)] = next(self._ids)
        return session

    def forward(self, session: KVSession, tokens: list[int], n_logits: int) -> torch.Tensor:
        return self.forward_many([Work(session, tokens, n_logits)])[0]

    def forward_many(self, works: list[Work]) -> list[torch.Tensor]:
        self._tell("forward", [(self._sids[id(w.session)], list(w.tokens), w.n_logits) for w in works])
        return self.local.forward_many(works)

    def truncate(self, session: KVSession, length: int) -> None:
        self._tell("truncate", self._sids[id(session)], length)
        self.local.truncate(session, length)

    def release(self, session: KVSession) -> None:
        self._tell("release", self._sids.pop(id(session)))
        self.local.release(session)

    def close(self) -> None:
        self._watch.stop()
        with contextlib.suppress(RuntimeError):  # a rank that has exited already needs no telling
            self._tell("close")
        leave(self.local)
        for follower in self._followers:  # they leave on "close"; one that hangs is stopped
            assert follower.stdin is not None
            with contextlib.suppress(OSError):  # a pipe whose other end has closed
                follower.stdin.close()
            try:
                follower.wait(timeout=FOLLOWER_EXIT_S)
            except subprocess.TimeoutExpired:
                follower.kill()
                follower.wait()

    def _tell(self, *command: Any) -> None:
        frame = _frame(command)
        for rank, follower in enumerate(self._followers, start=1):
            assert follower.stdin is not None
            try:
                follower.stdin.write(frame)
                follower.stdin.flush()
            except OSError as exc:  # its end of the pipe is closed: it has exited
                raise RuntimeError(f"tensor-parallel rank {rank} has exited (status {follower.poll()})") from exc


def _frame(command: tuple[Any, ...]) -> bytes:
    body = msgspec.msgpack.encode(command)
    return len(body).to_bytes(FRAME_HEADER, "little") + body


def _next_command(commands: BinaryIO) -> list[Any]:
    """Rank 0's next call, as [name, *arguments]; ["close"] when its end of the pipe has closed."""
    header = commands.read(FRAME_HEADER)
    if len(header) < FRAME_HEADER:
        return ["close"]
    command: list[Any] = msgspec.msgpack.decode(commands.read(int.from_bytes(header, "little")))
    return command


def follow(engine: StaticEngine, commands: BinaryIO) -> None:
    """A rank above 0: repeat rank 0's calls on this shard until it closes."""
    sessions: dict[int, KVSession] = {}
    while True:
        name, *args = _next_command(commands)
        if name == "forward":
            works = [Work(sessions.setdefault(sid, engine.new_session()), tokens, n) for sid, tokens, n in args[0]]
            engine.forward_many(works)
        elif name == "truncate":
            engine.truncate(sessions[args[0]], args[1])
        elif name == "release":
            engine.release(sessions.pop(args[0]))
        elif name == "close":
            leave(engine)
            return


def start_followers(model: ModelConfig, world: int, port: int, max_sessions: int) -> list[subprocess.Popen[bytes]]:
    """Ranks 1..world-1 as processes that die with this one."""
    followers = []
    for rank in range(1, world):
        args = ["--model", model.name, "--rank", str(rank), "--world", str(world), "--port", str(port)]
        args += ["--max-sessions", str(max_sessions)]
        for flag, value in (("--device", model.device), ("--dtype", model.dtype), ("--threads", model.threads)):
            if value is not None:
                args += [flag, str(value)]
        command = [sys.executable, "-m", "edgespec.engine.tensor_parallel", *args]
        # the hook only sets a signal; the calls come down the pipe to the follower's standard input
        followers.append(subprocess.Popen(command, stdin=subprocess.PIPE, preexec_fn=_die_with_parent))
    return followers


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6").prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def main() -> None:
    parser = argparse.ArgumentParser(description="A tensor-parallel rank above 0 (started by `edgespec cloud`)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-sessions", type=int, required=True)
    parser.add_argument("--device")
    parser.add_argument("--dtype")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the whole group: the cloud tells us when to leave
    rank = Rank(args.rank, args.world, args.port)
    config = ModelConfig(args.model, device=args.device, dtype=args.dtype, threads=args.threads, engine="static")
    follow(sharded_engine(config, rank, args.max_sessions), sys.stdin.buffer)


if __name__ == "__main__":
    main()
