"""The compact forward with the small operations fused into Triton kernels (kernels.py): the GPU
path for verify steps (replayed from CUDA graphs) and for prefills (run as they come). Same
arithmetic and the same cache as CompactModel.forward, which stays the path for CPUs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgespec.engine import kernels
from edgespec.engine.compact_model import CompactModel, last_rows
from edgespec.engine.static_kv import StaticKV

ATTENTION, MLP = 0, 1  # the blocks of a layer, each ending in a sum over the tensor-parallel ranks


def fused_forward(
    model: CompactModel,
    kv: StaticKV,
    slots: torch.Tensor,
    tokens: torch.Tensor,
    positions: torch.Tensor,
    span: int,
    n_logits: int,
    ends: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits [batch, n_logits, vocab] of the last positions (before `ends`), as
    CompactModel.forward."""
    shape, layers = model.shape, model.layers
    rotation = _rotation(model, positions)
    where = (slots, positions)
    x, h = kernels.add_rms_norm(F.embedding(tokens, model.embed), None, layers[0].input_norm, shape.eps)
    for index, layer in enumerate(layers):
        qkv = _linear(h, layer.qkv, layer.qkv_bias)
        norms = (layer.q_norm, layer.k_norm) if layer.q_norm is not None and layer.k_norm is not None else None
        cache = (kv.keys[index], kv.values[index])
        query = kernels.rotate_and_store(qkv, norms, rotation, cache, where, shape.heads, shape.eps)
        attended = kernels.cached_attention(query, cache, where, span)
        x, h = _close_block(model, ATTENTION, x, (attended.flatten(2), layer.out), layer.post_norm)
        following = layers[index + 1].input_norm if index + 1 < len(layers) else model.final_norm
        x, h = _close_block(model, MLP, x, (kernels.silu_mul(_linear(h, layer.gate_up)), layer.down), following)
    return model.gather_vocab(_linear(last_rows(h, n_logits, ends).contiguous(), model.lm_head)).float()


def _close_block(
    model: CompactModel, block: int, x: torch.Tensor, projection: tuple[torch.Tensor, torch.Tensor], norm: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A block's output projection (its inputs, its weight), summed over the tensor-parallel ranks,
    added to the residual stream x: (new x, new x normalised by `norm` for what follows)."""
    inputs, weight = projection
    peers, eps = model.peer_sum, model.shape.eps
    if peers is not None and peers.sums(inputs):
        _linear(inputs, weight, out=peers.partial(block, x.shape))
        return peers.add_rms_norm(block, x, norm, eps)
    return kernels.add_rms_norm(x, model.reduce(_linear(inputs, weight)), norm, eps)


def prepare(model: CompactModel) -> None:
    """Time the skinny kernel's configurations for every weight shape now, at start-up: left to
    their first use, the trials stall every waiting session for seconds in the middle of serving."""
    layer = model.layers[0]  # every layer has the same shapes
    for weight, bias in ((layer.qkv, layer.qkv_bias), (layer.out, None), (layer.gate_up, None), (layer.down, None)):
        _linear(weight.new_zeros(1, weight.shape[1]), weight, bias)
    _linear(model.lm_head.new_zeros(1, model.lm_head.shape[1]), model.lm_head)


def _linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, out: torch.Tensor | None = None
) -> torch.Tensor:
    """A few rows through the skinny kernel, more through the general matrix product; into `out`
    when given (bias-free products only)."""
    rows, inner = x.numel() // x.shape[-1], x.shape[-1]
    if rows <= kernels.SKINNY_ROWS and inner % kernels.SKINNY_K == 0:
        return kernels.skinny_linear(x, weight, bias, out)
    if out is not None:
        return torch.matmul(x, weight.t(), out=out)
    return F.linear(x, weight, bias)


def _rotation(model: CompactModel, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [B·q, head_dim / 2] in float32: the kernel rotates the two halves itself."""
    angles = positions.reshape(-1, 1).float() * model.inv_freq.to(positions.device)
    return (angles.cos() * model.rope_scale).contiguous(), (angles.sin() * model.rope_scale).contiguous()
