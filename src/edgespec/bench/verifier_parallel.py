"""`edgespec bench verifier --tensor-parallel-size N`: the verify step of a target split over N
GPUs of one host, against its per-GPU floor.

Each rank is a process (spawned here) that builds, with random weights, exactly its shard: the
architecture with 1/N of the attention heads, key/value heads and MLP features (what
engine/sharding.py keeps of a whole model), so a 32B model never has to fit one GPU whole. Every
rank runs the same steps in the same order (their all-reduces meet); rank 0 reports. The floor of
a cell is the shard's weights and KV over the measured copy bandwidth (or its FLOPs over the
matmul rate), plus the measured cost of the step's all-reduces (two per layer, of the batch's
hidden states).
"""

from __future__ import annotations

import os
import statistics
from dataclasses import asdict
from typing import Any

import torch
import torch.distributed as dist

from edgespec.bench.verifier import ARCHITECTURES, Cell, floor_ms, measure_ceilings, random_model, time_static
from edgespec.engine.sharding import check_divisible, shard_head
from edgespec.engine.static_engine import StaticEngine
from edgespec.engine.tensor_parallel import Rank, all_gather_last, all_reduce, collectives, join

# The lent multi-GPU machines require NVLink multicast off (their notes say why).
NO_MULTICAST = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def run_parallel(
    arch: str, world: int, batches: list[int], ks: list[int], contexts: list[int], repeats: int
) -> dict[str, Any]:
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
        context.Process(target=_rank, args=(Rank(r, world, port), arch, batches, ks, contexts, repeats, results))
        for r in range(world)
    ]
    for process in ranks:
        process.start()
    result = results.get()
    for process in ranks:  # their work is done; a rank stuck tearing NCCL down must not hold us
        process.join(timeout=30)
        if process.is_alive():
            process.terminate()
    if isinstance(result, BaseException):
        raise result
    return result


def _rank(
    rank: Rank, arch: str, batches: list[int], ks: list[int], contexts: list[int], repeats: int, results: Any
) -> None:
    try:
        result = _measure(rank, arch, batches, ks, contexts, repeats)
    except BaseException as exc:  # rank 0 reports any rank's failure, so the parent never waits forever
        results.put(exc)
        raise
    if rank.rank == 0:
        results.put(result)


def _measure(
    rank: Rank, arch: str, batches: list[int], ks: list[int], contexts: list[int], repeats: int
) -> dict[str, Any]:
    device = torch.device(rank.device("cuda"))
    join(rank, str(device))
    ceilings = measure_ceilings(device)
    model = random_model(arch, device, shard=rank.world)
    span = max(contexts) + max(ks) + 1
    engine = StaticEngine(model, max(batches), span, kv_budget=1 << 40)
    engine.model.reduce = all_reduce  # the model is this rank's shard: its blocks end in partial sums
    shard_head(engine.model, collectives(rank))  # built whole: random_model shards the layers only
    hidden = model.config.hidden_size
    cells = []
    with torch.inference_mode():
        for context in contexts:
            sessions = [engine.new_session() for _ in range(max(batches))]
            for s in sessions:
                engine.forward(s, [7] * context, 1)
            for batch in batches:
                for k in ks:
                    ms = time_static(engine, sessions[:batch], context, k + 1, repeats)
                    floor, bound = floor_ms(model, ceilings, batch, k + 1, context, head_ranks=rank.world)
                    shapes = (batch * (k + 1), hidden, engine.model.lm_head.shape[0])
                    collectives_ms = _collectives_ms(shapes, 2 * model.config.num_hidden_layers, device)
                    cells.append(Cell(batch, k, context, ms, None, floor + collectives_ms, bound))
                    if rank.rank == 0:
                        _print(rank.world, cells[-1], collectives_ms)
            for s in sessions:
                engine.release(s)
    dist.barrier()
    return {"arch": arch, "tensor_parallel_size": rank.world, "device": torch.cuda.get_device_name(device),
            "ceilings": asdict(ceilings), "cells": [asdict(c) | {"ratio": c.ratio} for c in cells]}  # fmt: skip


def _print(world: int, cell: Cell, collectives_ms: float) -> None:
    shape = f"TP={world} batch {cell.batch:3d} k {cell.k:2d} ctx {cell.context:5d}"
    floor = f"floor {cell.floor_ms:6.2f} ms (collectives {collectives_ms:5.2f})"
    print(f"{shape}  {cell.ms:7.2f} ms  {floor}  x{cell.ratio:5.2f}", flush=True)


def _collectives_ms(shapes: tuple[int, int, int], count: int, device: torch.device) -> float:
    """The step's collectives alone: `count` all-reduces of [rows, hidden] bf16 one after another,
    then the all-gather of the head's [rows, vocabulary slice], replayed from a CUDA graph as the
    step replays them (no launch cost from Python)."""
    rows, hidden, vocab_part = shapes
    x = torch.randn(rows, hidden, dtype=torch.bfloat16, device=device)
    logits = torch.randn(rows, vocab_part, dtype=torch.bfloat16, device=device)

    def collectives() -> None:
        for _ in range(count):
            dist.all_reduce(x)
        all_gather_last(logits)

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
