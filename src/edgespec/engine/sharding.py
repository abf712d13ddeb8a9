"""Tensor parallelism for the compact forward, Megatron-style: each rank keeps a slice of the
attention heads and of the MLP's intermediate features, so the attention and MLP blocks each end
in a partial sum that one all-reduce completes. Embedding, norms and the output head stay whole on
every rank (every rank computes the same logits; rank 0 reads them).

    q, k, v rows      → this rank's query heads and key/value heads (the grouping is kept)
    output columns    → the same heads; then all-reduce
    gate, up rows     → this rank's intermediate features
    down columns      → the same features; then all-reduce
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch

from edgespec.engine.compact_model import CompactModel, Layer

Parallel = tuple[int, int, Callable[[torch.Tensor], torch.Tensor]]  # rank, world size, all-reduce


def check_divisible(heads: int, kv_heads: int, intermediate: int, world: int) -> None:
    for name, count in (("attention heads", heads), ("key/value heads", kv_heads), ("MLP features", intermediate)):
        if count % world:
            raise ValueError(f"tensor parallelism over {world} ranks needs {name} ({count}) divisible by {world}")


def shard(model: CompactModel, rank: int, world: int, all_reduce: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Keep this rank's slice of every layer, in place; `all_reduce` sums a tensor over the ranks."""
    shape = model.shape
    intermediate = model.layers[0].down.shape[1]
    check_divisible(shape.heads, shape.kv_heads, intermediate, world)
    heads, kv_heads = shape.heads // world, shape.kv_heads // world
    model.layers = [
        _slice_layer(layer, rank, (shape.heads, shape.kv_heads, shape.head_dim), world) for layer in model.layers
    ]
    model.shape = replace(shape, heads=heads, kv_heads=kv_heads)
    model.reduce = all_reduce


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
