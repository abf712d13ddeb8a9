"""`edgespec bench verifier --tensor-parallel-size N`: the verify step of a target split over N
GPUs of one host, against its per-GPU floor.

Each rank is a process (spawned here) that builds, with random weights, exactly its shard: the
architecture with 1/N of the attention heads, key/value heads and MLP features (what
engine/sharding.py keeps of a whole model), so a 32B model never has to fit one GPU whole. Every
rank runs the same steps in the same order (their all-reduces meet); rank 0 reports. The floor of
a cell is the shard's weights and KV over the measured copy bandwidth (or its FLOPs over the
matmul rate), plus the measured cost of the step's sums over the ranks (two per layer, of the
batch's hidden states, through peer memory and fused with the add and norm after them, or through
NCCL with --nccl) and of the head's all-gather.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.distributed as dist

from edgespec.bench.verifier import (
    ARCHITECTURES,
    Cell,
    floor_ms,
    measure_ceilings,
    random_model,
    static_step,
    time_static,
)
from edgespec.bench.verifier_profile import PROFILED_STEPS, print_profile
from edgespec.engine import kernels
from edgespec.engine.compact_model import CompactModel
from edgespec.engine.peer_sum import connect
from edgespec.engine.sharding import check_divisible, shard_head
from edgespec.engine.static_engine import StaticEngine
from edgespec.engine.tensor_parallel import Rank, all_gather_last, all_reduce, collectives, join, leave

# The lent multi-GPU machines require NVLink multicast off (their notes say why).
NO_MULTICAST = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


Grid = tuple[list[int], list[int], list[int]]  # batches, draft lengths, contexts


@dataclass(frozen=True)
class Options:
    repeats: int
    peer_sums: bool = True  # the step's sums through peer memory (engine/peer_sum.py), else NCCL
    profile: bool = False  # print each cell's costliest kernels (rank 0's)
    early_launch: bool = True  # kernels launched while the one before ends (engine/kernels.py)


def run_parallel(arch: str, world: int, grid: Grid, options: Options) -> dict[str, Any]:
    fields: dict[str, Any] = ARCHITECTURES[arch][1]
    check_divisible(fields["num_attention_heads"], fields["num_key_value_heads"], fields["intermediate_size"], world)
    if torch.cuda.device_count() < world:
        raise SystemExit(
            f"--tensor-parallel-size {world} needs {world} GPUs; this host has {torch.cuda.device_count()}"
        )
    os.environ.update(NO_MULTICAST)
    from edgespec.processes import free_port

    context = torch.multiprocessing.get_context("spawn")
    results = context.SimpleQueue()
    port = free_port()
    ranks = [
        context.Process(target=_rank, args=(Rank(r, world, port), arch, grid, options, results)) for r in range(world)
    ]
    for process in ranks:
        process.start()
    result = results.get()
    for process in ranks:  # their work is done; should one hang leaving the group, it must not hold us
        process.join(timeout=30)
        if process.is_alive():
            process.terminate()
    if isinstance(result, BaseException):
        raise result
    return result


def _rank(rank: Rank, arch: str, grid: Grid, options: Options, results: Any) -> None:
    try:
        result = _measure(rank, arch, grid, options)
    except BaseException as exc:  # rank 0 reports any rank's failure, so the parent never waits forever
        results.put(exc)
        raise
    if rank.rank == 0:
        results.put(result)


def _measure(rank: Rank, arch: str, grid: Grid, options: Options) -> dict[str, Any]:
    batches, ks, contexts = grid
    kernels.LAUNCH_EARLY = options.early_launch
    device = torch.device(rank.device("cuda"))
    join(rank, str(device))
    ceilings = measure_ceilings(device)
    model = random_model(arch, device, shard=rank.world)
    span = max(contexts) + max(ks) + 1
    engine = StaticEngine(model, max(batches), span, kv_budget=1 << 40)
    engine.model.reduce = all_reduce  # the model is this rank's shard: its blocks end in partial sums
    shard_head(engine.model, collectives(rank))  # built whole: random_model shards the layers only
    if options.peer_sums and not connect(engine.model):
        raise SystemExit("these GPUs cannot read each other's memory: run with --nccl")
    hidden = model.config.hidden_size
    cells = []
    with torch.inference_mode():
        for context in contexts:
            sessions = [engine.new_session() for _ in range(max(batches))]
            for s in sessions:
                engine.forward(s, [7] * context, 1)
            for batch in batches:
                for k in ks:
                    ms = time_static(engine, sessions[:batch], context, k + 1, options.repeats)
                    floor, bound = floor_ms(model, ceilings, batch, k + 1, context, head_ranks=rank.world)
                    shapes = (batch * (k + 1), hidden, engine.model.lm_head.shape[0])
                    collectives_ms = _collectives_ms(shapes, 2 * model.config.num_hidden_layers, engine.model)
                    cells.append(Cell(batch, k, context, ms, None, floor + collectives_ms, bound))
                    if rank.rank == 0:
                        _print(rank.world, cells[-1], collectives_ms)
                    if options.profile:
                        _profile(static_step(engine, sessions[:batch], context, k + 1), rank, cells[-1])
            for s in sessions:
                engine.release(s)
    dist.barrier()
    leave(engine)
    return {"arch": arch, "tensor_parallel_size": rank.world, "device": torch.cuda.get_device_name(device),
            "sums": "peer memory" if options.peer_sums else "nccl", "early_launch": options.early_launch,
            "ceilings": asdict(ceilings), "cells": [asdict(c) | {"ratio": c.ratio} for c in cells]}  # fmt: skip


def _profile(step: Callable[[], None], rank: Rank, cell: Cell) -> None:
    """Rank 0 prints where the step's GPU time goes; the others step alike, so that their sums meet."""
    if rank.rank == 0:
        print_profile(step, f"TP={rank.world} batch {cell.batch} k {cell.k} context {cell.context}")
        return
    for _ in range(PROFILED_STEPS + 1):  # print_profile's warm-up step and the steps it records
        step()


def _print(world: int, cell: Cell, collectives_ms: float) -> None:
    shape = f"TP={world} batch {cell.batch:3d} k {cell.k:2d} ctx {cell.context:5d}"
    floor = f"floor {cell.floor_ms:6.2f} ms (collectives {collectives_ms:5.2f})"
    print(f"{shape}  {cell.ms:7.2f} ms  {floor}  x{cell.ratio:5.2f}", flush=True)


def _collectives_ms(shapes: tuple[int, int, int], count: int, model: CompactModel) -> float:
    """The step's collectives alone: `count` sums of [rows, hidden] one after another (through peer
    memory, each with its add and norm; or NCCL all-reduces), then the all-gather of the head's
    [rows, vocabulary slice], replayed from a CUDA graph as the step replays them (no launch cost
    from Python)."""
    rows, hidden, vocab_part = shapes
    x = torch.randn(rows, hidden, dtype=model.embed.dtype, device=model.embed.device)
    logits = torch.randn(rows, vocab_part, dtype=x.dtype, device=x.device)
    peers = model.peer_sum

    def collectives() -> None:
        for index in range(count):
            if peers is not None and peers.sums(x):
                peers.add_rms_norm(index % 2, x, model.final_norm, model.shape.eps)
            else:
                dist.all_reduce(x)
        all_gather_last(logits).float()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        collectives()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        collectives()
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)
