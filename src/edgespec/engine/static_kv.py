"""A KV cache allocated once: per layer, keys and values of [slots, max_len, kv_heads, head_dim].
A session owns one slot for its life; truncating it is free (the engine only moves its length:
positions past it are overwritten before anything reads them), and the tensors never move, so a
captured CUDA graph can keep reading and writing them. Slot and position lead the layout so that
a step's new keys land with one index_copy over (slot, position) rows."""

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
        shape = (slots, max_len, kv_heads, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.slots = slots
        self.max_len = max_len

    def rows(self, slots: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The flat (slot, position) row of each new token [B·q], computed once per step."""
        return (slots[:, None] * self.max_len + positions).reshape(-1)

    def write_and_read(
        self,
        layer: int,
        rows: torch.Tensor,  # [B·q], from rows()
        slots: torch.Tensor,  # [B]
        key: torch.Tensor,  # [B, q, kv_heads, head_dim]
        value: torch.Tensor,
        span: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new keys and values; return each session's first `span` positions as
        [B, kv_heads, span, head_dim] (a strided view of a gathered copy), new ones included."""
        keys, values = self.keys[layer], self.values[layer]
        flat = keys.shape[2:]
        keys.view(-1, *flat).index_copy_(0, rows, key.reshape(-1, *flat))
        values.view(-1, *flat).index_copy_(0, rows, value.reshape(-1, *flat))
        gathered_keys = keys[:, :span].index_select(0, slots).transpose(1, 2)
        return gathered_keys, values[:, :span].index_select(0, slots).transpose(1, 2)
