"""Tensor parallelism for the compact forward, Megatron-style: each rank keeps a slice of the
attention heads and of the MLP's intermediate features, so the attention and MLP blocks each end
in a partial sum that one all-reduce completes. The output head is split by vocabulary and its
slices gathered, so no rank reads the whole head (at batch 1 it is a tenth of an 8B model's
bytes); embedding and norms stay whole on every rank.

    q, k, v rows      → this rank's query heads and key/value heads (the grouping is kept)
    output columns    → the same heads; then all-reduce
    gate, up rows     → this rank's intermediate features
    down columns      → the same features; then all-reduce
    head rows         → this rank's share of the vocabulary; then all-gather
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from edgespec.engine.compact_model import CompactModel, Layer


@dataclass(frozen=True)
class Parallel:
    """This rank's place in the group, and the two collectives the forward needs."""

    rank: int
    world: int
    all_reduce: Callable[[torch.Tensor], torch.Tensor]  # sums a tensor over the ranks
    all_gather: Callable[[torch.Tensor], torch.Tensor]  # each rank's tensor, concatenated on the last dim


def check_divisible(heads: int, kv_heads: int, intermediate: int, world: int) -> None:
    for name, count in (("attention heads", heads), ("key/value heads", kv_heads), ("MLP features", intermediate)):
        if count % world:
            raise ValueError(f"tensor parallelism over {world} ranks needs {name} ({count}) divisible by {world}")


def shard(model: CompactModel, parallel: Parallel) -> None:
    """Keep this rank's slice of every layer and of the head, in place."""
    shape, rank, world = model.shape, parallel.rank, parallel.world
    intermediate = model.layers[0].down.shape[1]
    check_divisible(shape.heads, shape.kv_heads, intermediate, world)
    heads, kv_heads = shape.heads // world, shape.kv_heads // world
    model.layers = [
        _slice_layer(layer, rank, (shape.heads, shape.kv_heads, shape.head_dim), world) for layer in model.layers
    ]
    model.shape = replace(shape, heads=heads, kv_heads=kv_heads)
    model.reduce = parallel.all_reduce
    shard_head(model, parallel)


def shard_head(model: CompactModel, parallel: Parallel) -> None:
    """This rank's share of the vocabulary (a vocabulary that does not divide stays whole)."""
    if model.vocab_size % parallel.world == 0:
        model.lm_head = _part(model.lm_head, parallel.rank, parallel.world)
        model.gather_vocab = parallel.all_gather


def _slice_layer(layer: Layer, rank: int, heads: tuple[int, int, int], world: int) -> Layer:
    query_heads, kv_heads, head_dim = heads
    q_rows, kv_rows = query_heads * head_dim, kv_heads * head_dim
    sections = (q_rows, kv_rows, kv_rows)
    intermediate = layer.down.shape[1]
    gate, up = layer.gate_up.split(intermediate)
    return replace(
        layer,
        qkv=torch.cat([_part(w, rank, world) for w in layer.qkv.split(sections)]),
        qkv_bias=None
        if layer.qkv_bias is None
        else torch.cat([_part(b, rank, world) for b in layer.qkv_bias.split(sections)]),
        out=_part(layer.out, rank, world, dim=1),
        gate_up=torch.cat([_part(gate, rank, world), _part(up, rank, world)]),
        down=_part(layer.down, rank, world, dim=1),
    )


def _part(weight: torch.Tensor, rank: int, world: int, dim: int = 0) -> torch.Tensor:
    """This rank's contiguous share along `dim`, as its own tensor (the whole can then be freed)."""
    return weight.chunk(world, dim=dim)[rank].contiguous()
