"""A compact forward pass for the Llama family (Llama, Qwen2, Qwen3): the same arithmetic as the
transformers model code, rearranged for a server that verifies many sessions at once. Query, key
and value projections are one matrix, gate and up one matrix, and keys and values go straight into
a preallocated cache (static_kv.py) at the positions given, so one call serves a batch of sessions
at different positions and every tensor shape is fixed by (batch, new tokens, cache span): what
CUDA graphs need. The weights are taken over from a loaded transformers model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from edgespec.engine.static_kv import StaticKV

if TYPE_CHECKING:
    from edgespec.engine.peer_sum import PeerSum

SUPPORTED = ("LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")


@dataclass(frozen=True)
class Shape:
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    eps: float


@dataclass
class Layer:
    input_norm: torch.Tensor
    qkv: torch.Tensor  # [(heads + 2·kv_heads)·head_dim, hidden]
    qkv_bias: torch.Tensor | None  # Qwen2
    q_norm: torch.Tensor | None  # Qwen3: RMSNorm over each head's query and key
    k_norm: torch.Tensor | None
    out: torch.Tensor
    post_norm: torch.Tensor
    gate_up: torch.Tensor  # [2·intermediate, hidden]
    down: torch.Tensor


class CompactModel:
    def __init__(self, model: PreTrainedModel) -> None:
        architecture = type(model).__name__
        if architecture not in SUPPORTED:
            raise ValueError(f"the static engine runs {', '.join(SUPPORTED)}, not {architecture}")
        config = model.config
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        self.shape = Shape(config.num_hidden_layers, heads, config.num_key_value_heads, head_dim, config.rms_norm_eps)
        inner = model.model
        self.embed = inner.embed_tokens.weight
        self.layers = [_take_layer(layer) for layer in inner.layers]
        self.final_norm = inner.norm.weight
        self.lm_head = model.get_output_embeddings().weight
        self.vocab_size = int(self.lm_head.shape[0])
        rotary = inner.rotary_emb
        self.inv_freq = rotary.inv_freq.float()
        self.rope_scale = float(getattr(rotary, "attention_scaling", 1.0))
        # Sums the partial outputs of the attention and MLP blocks across tensor-parallel ranks
        # (engine/sharding.py); a single rank holds whole blocks and has nothing to sum.
        self.reduce: Callable[[torch.Tensor], torch.Tensor] = _whole
        # Joins the ranks' slices of the vocabulary into whole logits (a rank's head is its slice)
        self.gather_vocab: Callable[[torch.Tensor], torch.Tensor] = _whole
        # On GPU ranks that reach each other's memory, the fused step's sums go through it instead
        # of `reduce`, fused with the add and norm after them (engine/peer_sum.py)
        self.peer_sum: PeerSum | None = None

    def forward(
        self,
        kv: StaticKV,
        slots: torch.Tensor,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        span: int,
        n_logits: int,
        ends: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [batch, n_logits, vocab] of the last positions (before `ends`, see last_rows).
        `tokens` and `positions` are [batch, q]; each session's keys and values are written at its
        positions in its cache slot, and attention reads the first `span` positions of the slot,
        masked causally."""
        cos, sin = self._rotation(positions)
        group = self.shape.heads // self.shape.kv_heads
        visible = torch.arange(span, device=positions.device)[None, None, :] <= positions[:, :, None]  # [B, q, span]
        mask = visible.repeat_interleave(group, dim=1)[:, None]  # [B, 1, q·group, span]: see _attention
        rows = kv.rows(slots, positions)
        x = F.embedding(tokens, self.embed)
        for index, layer in enumerate(self.layers):
            h = _rms(x, layer.input_norm, self.shape.eps)
            x = x + self._attention(layer, index, h, kv, (rows, slots), (cos, sin), mask, span)
            gate, up = F.linear(_rms(x, layer.post_norm, self.shape.eps), layer.gate_up).chunk(2, dim=-1)
            x = x + self.reduce(F.linear(F.silu(gate) * up, layer.down))
        x = _rms(last_rows(x, n_logits, ends), self.final_norm, self.shape.eps)
        return self.gather_vocab(F.linear(x, self.lm_head)).float()

    def _attention(
        self,
        layer: Layer,
        index: int,
        x: torch.Tensor,
        kv: StaticKV,
        where: tuple[torch.Tensor, torch.Tensor],  # the new tokens' cache rows, and the sessions' slots
        rotation: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor,
        span: int,
    ) -> torch.Tensor:
        shape, (batch, q, _) = self.shape, x.shape
        cos, sin = rotation
        group = shape.heads // shape.kv_heads
        qkv = F.linear(x, layer.qkv, layer.qkv_bias)
        query, key, value = qkv.split([shape.heads * shape.head_dim, *[shape.kv_heads * shape.head_dim] * 2], dim=-1)
        query = query.view(batch, q, shape.heads, shape.head_dim)
        key = key.view(batch, q, shape.kv_heads, shape.head_dim)
        value = value.view(batch, q, shape.kv_heads, shape.head_dim)
        if layer.q_norm is not None and layer.k_norm is not None:
            query, key = _rms(query, layer.q_norm, shape.eps), _rms(key, layer.k_norm, shape.eps)
        query, key = _rotate(query, cos, sin), _rotate(key, cos, sin)
        keys, values = kv.write_and_read(index, *where, key, value, span)  # [B, kv_heads, span, d]
        # Grouped queries: the heads sharing a key head become extra query rows of it, so attention
        # reads each key once and runs the masked kernel without expanding keys per query head.
        grouped = query.view(batch, q, shape.kv_heads, group, shape.head_dim).permute(0, 2, 1, 3, 4)
        grouped = grouped.reshape(batch, shape.kv_heads, q * group, shape.head_dim)
        attended = F.scaled_dot_product_attention(grouped, keys, values, attn_mask=mask)
        attended = attended.view(batch, shape.kv_heads, q, group, shape.head_dim).permute(0, 2, 1, 3, 4)
        return self.reduce(F.linear(attended.reshape(batch, q, -1), layer.out))

    def _rotation(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin [B, q, 1, head_dim] of the rotary embedding at each position."""
        angles = positions[..., None].float() * self.inv_freq.to(positions.device)
        angles = torch.cat([angles, angles], dim=-1)[:, :, None]
        dtype = self.embed.dtype
        return (angles.cos() * self.rope_scale).to(dtype), (angles.sin() * self.rope_scale).to(dtype)


def _take_layer(layer: Any) -> Layer:  # a decoder layer of any supported architecture
    attention, mlp = layer.self_attn, layer.mlp
    projections = (attention.q_proj, attention.k_proj, attention.v_proj)
    bias = None
    if attention.q_proj.bias is not None:
        bias = torch.cat([p.bias.data for p in projections])
    q_norm, k_norm = getattr(attention, "q_norm", None), getattr(attention, "k_norm", None)
    return Layer(
        input_norm=layer.input_layernorm.weight.data,
        qkv=torch.cat([p.weight.data for p in projections]),
        qkv_bias=bias,
        q_norm=q_norm.weight.data if q_norm is not None else None,
        k_norm=k_norm.weight.data if k_norm is not None else None,
        out=attention.o_proj.weight.data,
        post_norm=layer.post_attention_layernorm.weight.data,
        gate_up=torch.cat([mlp.gate_proj.weight.data, mlp.up_proj.weight.data]),
        down=mlp.down_proj.weight.data,
    )


def _whole(x: torch.Tensor) -> torch.Tensor:
    return x


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm as transformers computes it: normalised in float32, back in the input's dtype, then
    scaled. On a GPU one fused kernel (it scales before rounding: a last-bit difference in bf16)."""
    if x.is_cuda:
        return F.rms_norm(x, weight.shape, weight, eps)
    variance = x.float().pow(2).mean(-1, keepdim=True)
    return weight * (x.float() * torch.rsqrt(variance + eps)).to(x.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def last_rows(x: torch.Tensor, n: int, ends: torch.Tensor | None) -> torch.Tensor:
    """The last n of each session's rows of x [batch, q, width]; where its tokens are padded (a
    prompt's graph), `ends` [batch] says how many rows are real, and these are the n before."""
    if ends is None:
        return x[:, -n:]
    before_end = ends[:, None] - n + torch.arange(n, device=x.device)
    return x.gather(1, before_end[..., None].expand(-1, -1, x.shape[-1]))
