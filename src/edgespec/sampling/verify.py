"""Deciding a drafted block against the target: greedy matching and lossless rejection sampling.

Both return (accepted, token): the first `accepted` drafted tokens stand, followed by `token`,
the target's own choice at the first rejected position or the bonus token after a full accept.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from edgespec.protocol.messages import SparseDist
from edgespec.sampling import sparse
from edgespec.sampling.probs import greedy_tokens


def sample_dense(probs: torch.Tensor, u: float) -> int:  # probs [vocab]
    """Inverse-CDF sample with uniform u; zero-probability tokens are never chosen."""
    return _inverse_cdf(probs[None].double(), [u])[0]


def _inverse_cdf(weights: torch.Tensor, us: Sequence[float]) -> list[int]:
    """One token from each row of weights [n, vocab] (float64, not normalised), with its u."""
    cdf = torch.cumsum(weights, dim=-1)
    thresholds = torch.tensor(us, dtype=torch.float64, device=weights.device) * cdf[:, -1]
    index = torch.searchsorted(cdf, thresholds[:, None], right=True)
    return index.clamp_(max=weights.shape[-1] - 1).flatten().tolist()


def verify_greedy(target_logits: torch.Tensor, drafted: Sequence[int]) -> tuple[int, int]:
    """Accept the longest prefix equal to the target's argmax.  target_logits [k+1, vocab]."""
    return accept_matching(greedy_tokens(target_logits), drafted)


def accept_matching(choices: Sequence[int], drafted: Sequence[int]) -> tuple[int, int]:
    """verify_greedy on the argmaxes [k+1] already read."""
    accepted = 0
    while accepted < len(drafted) and drafted[accepted] == choices[accepted]:
        accepted += 1
    return accepted, choices[accepted]


@dataclass(frozen=True)
class SampledRound:
    """A sampled session's drafted block, and the uniforms its decision draws."""

    drafted: Sequence[int]  # [k]
    dists: Sequence[SparseDist]  # the draft's q for each drafted token
    accept_u: Sequence[float]  # [k]
    sample_u: Sequence[float]  # [k+1]


def decide_sampled(target_probs: torch.Tensor, rounds: Sequence[SampledRound]) -> list[tuple[int, int]]:
    """Leviathan et al. (2023) for many sessions' rounds at once, their target probabilities
    stacked in order (k+1 rows each): accept x with probability min(1, p(x)/q(x)); on rejection
    sample from norm(max(0, p - q)); after a full accept sample the bonus token from p. Two reads
    from the target's device in all, where deciding one session at a time took several each."""
    firsts = list(itertools.accumulate((len(r.drafted) + 1 for r in rounds), initial=0))[:-1]
    rows = [first + i for first, r in zip(firsts, rounds, strict=True) for i in range(len(r.drafted))]
    tokens = [token for r in rounds for token in r.drafted]
    p_drafted = iter(target_probs[rows, tokens].tolist() if rows else [])  # the first read
    accepted = [_accepted(r, [next(p_drafted) for _ in r.drafted]) for r in rounds]
    rejected_q = [r.dists[a] if a < len(r.drafted) else None for r, a in zip(rounds, accepted, strict=True)]
    last_rows = [first + a for first, a in zip(firsts, accepted, strict=True)]  # the rejection, or the bonus
    u = [r.sample_u[a] for r, a in zip(rounds, accepted, strict=True)]
    return list(zip(accepted, _sample_rows(target_probs, last_rows, rejected_q, u), strict=True))


def _accepted(round_: SampledRound, p_drafted: Sequence[float]) -> int:
    """How many drafted tokens pass the acceptance test, from the first."""
    for i, (token, dist) in enumerate(zip(round_.drafted, round_.dists, strict=True)):
        if round_.accept_u[i] * sparse.probability(dist, token) >= p_drafted[i]:
            return i
    return len(round_.drafted)


def _sample_rows(probs: torch.Tensor, rows: list[int], qs: list[SparseDist | None], us: list[float]) -> list[int]:
    """One token from each of `rows` of probs (the second read): from the residual max(0, p - q)
    where a q is given (a rejection; from p itself if p == q up to rounding), else from p; by
    inverse CDF with each row's u."""
    p = probs[rows].double()
    q = torch.zeros_like(p)
    entries = [
        (n, token, weight / sum(dist.weights))
        for n, dist in enumerate(qs)
        if dist is not None
        for token, weight in zip(dist.ids, dist.weights, strict=True)
    ]
    if entries:
        where, tokens, mass = zip(*entries, strict=True)
        q[list(where), list(tokens)] = torch.tensor(mass, dtype=torch.float64, device=q.device)
    residual = (p - q).clamp_(min=0.0)
    rejected = torch.tensor([dist is not None for dist in qs], device=p.device)
    return _inverse_cdf(torch.where((rejected & (residual.sum(dim=-1) > 0.0))[:, None], residual, p), us)
