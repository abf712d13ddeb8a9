"""Deciding a drafted block against the target: greedy matching and lossless rejection sampling.

Both return (accepted, token): the first `accepted` drafted tokens stand, followed by `token`,
the target's own choice at the first rejected position or the bonus token after a full accept.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from edgespec.protocol.messages import SparseDist
from edgespec.sampling import sparse
from edgespec.sampling.probs import greedy_tokens


def sample_dense(probs: torch.Tensor, u: float) -> int:  # probs [vocab]
    """Inverse-CDF sample with uniform u; zero-probability tokens are never chosen."""
    cdf = torch.cumsum(probs.double(), dim=0)
    threshold = torch.tensor([u], dtype=torch.float64, device=cdf.device) * cdf[-1]
    index = int(torch.searchsorted(cdf, threshold, right=True).item())
    return min(index, probs.shape[0] - 1)


def verify_greedy(target_logits: torch.Tensor, drafted: Sequence[int]) -> tuple[int, int]:
    """Accept the longest prefix equal to the target's argmax.  target_logits [k+1, vocab]."""
    return accept_matching(greedy_tokens(target_logits), drafted)


def accept_matching(choices: Sequence[int], drafted: Sequence[int]) -> tuple[int, int]:
    """verify_greedy on the argmaxes [k+1] already read."""
    accepted = 0
    while accepted < len(drafted) and drafted[accepted] == choices[accepted]:
        accepted += 1
    return accepted, choices[accepted]


def verify_sampled(
    target_probs: torch.Tensor,  # [k+1, vocab]
    drafted: Sequence[int],
    dists: Sequence[SparseDist],
    accept_u: Sequence[float],  # [k]
    sample_u: Sequence[float],  # [k+1]
) -> tuple[int, int]:
    """Leviathan et al. (2023): accept x with probability min(1, p(x)/q(x)); on rejection sample
    from norm(max(0, p - q)); after a full accept sample the bonus token from p."""
    for i, (token, dist) in enumerate(zip(drafted, dists, strict=True)):
        q_token = sparse.probability(dist, token)
        if accept_u[i] * q_token < float(target_probs[i, token]):
            continue
        return i, _sample_residual(target_probs[i], dist, sample_u[i])
    k = len(drafted)
    return k, sample_dense(target_probs[k], sample_u[k])


def _sample_residual(p: torch.Tensor, dist: SparseDist, u: float) -> int:
    residual = (p.double() - sparse.dense(dist, p.shape[0], p.device)).clamp_(min=0.0)
    if float(residual.sum()) <= 0.0:  # p == q up to rounding: a rejection was a rounding event
        return sample_dense(p, u)
    return sample_dense(residual, u)
