"""Sparse draft distributions quantized to the wire's precision before anyone samples from them.

The edge keeps the most likely tokens of its distribution (at most `support`), turns their
probabilities into 16-bit integer weights, and samples from q = weight / sum(weights). The cloud
rebuilds exactly that q from the same integers, so the acceptance test uses the q that was
sampled, whatever the rounding did. Rejection sampling is exact for any q.
"""

from __future__ import annotations

import torch

from edgespec.protocol.messages import SparseDist

WEIGHT_SCALE = 65535  # largest 16-bit weight


def quantize(probs: torch.Tensor, support: int) -> SparseDist:  # probs [vocab]
    """The top-`support` tokens of `probs` with integer weights; never empty."""
    top = torch.topk(probs.float(), min(support, probs.shape[-1]))
    mass = top.values / top.values.sum()
    weights = torch.round(mass / mass[0] * WEIGHT_SCALE).to(torch.int64)
    keep = weights > 0  # the most likely token has the full weight, so at least it is kept
    return SparseDist(ids=top.indices[keep].tolist(), weights=weights[keep].tolist())


def sample(dist: SparseDist, u: float) -> int:
    """Inverse-CDF sample with uniform u, in integer arithmetic so both sides agree exactly."""
    total = sum(dist.weights)
    threshold = min(int(u * total), total - 1)
    cumulative = 0
    for token, weight in zip(dist.ids, dist.weights, strict=True):
        cumulative += weight
        if threshold < cumulative:
            return token
    raise AssertionError("unreachable: threshold is below the total weight")


def probability(dist: SparseDist, token: int) -> float:
    """q(token); zero off the support."""
    for candidate, weight in zip(dist.ids, dist.weights, strict=True):
        if candidate == token:
            return weight / sum(dist.weights)
    return 0.0


def dense(dist: SparseDist, vocab_size: int, device: torch.device | None = None) -> torch.Tensor:
    """q as a dense [vocab] float64 vector."""
    q = torch.zeros(vocab_size, dtype=torch.float64, device=device)
    weights = torch.tensor(dist.weights, dtype=torch.float64, device=device)
    q[torch.tensor(dist.ids, device=device)] = weights / weights.sum()
    return q
