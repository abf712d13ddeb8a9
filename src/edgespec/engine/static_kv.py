"""A KV cache allocated once: per layer, keys and values of [slots, kv_heads, max_len, head_dim].
A session owns one slot for its life; truncating it is free (the engine only moves its length:
positions past it are overwritten before anything reads them), and the tensors never move, so a
captured CUDA graph can keep reading and writing them."""

from __future__ import annotations

import torch


class StaticKV:
    def __init__(
        self,
        layers: int,
        slots: int,
        kv_heads: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        shape = (slots, kv_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.slots = slots
        self.max_len = max_len

    @property
    def bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def write_and_read(
        self,
        layer: int,
        slots: torch.Tensor,  # [B]
        positions: torch.Tensor,  # [B, q]
        key: torch.Tensor,  # [B, q, kv_heads, head_dim]
        value: torch.Tensor,
        span: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new keys and values at their positions; return each session's first `span`
        positions [B, kv_heads, span, head_dim], new ones included."""
        rows = slots[:, None].expand_as(positions)
        keys, values = self.keys[layer], self.values[layer]
        keys[rows, :, positions] = key
        values[rows, :, positions] = value
        return keys[:, :, :span].index_select(0, slots), values[:, :, :span].index_select(0, slots)
