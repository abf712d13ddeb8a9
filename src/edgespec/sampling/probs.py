"""Logits to the distribution a request samples from: temperature, then top-k, then top-p."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch

from edgespec.config import SamplingParams

# Where each row's top-p set is sought first. A model's top-p set at p 0.9-0.95 is rarely more
# than a few hundred tokens; a flatter row costs a full sort.
TOP_P_CANDIDATES = 1024


def greedy_tokens(logits: torch.Tensor) -> list[int]:  # logits [n, vocab]
    """The argmax at each row."""
    return logits.argmax(dim=-1).tolist()


def greedy_rows(all_logits: list[torch.Tensor]) -> list[list[int]]:
    """The argmaxes of several sessions' logits, with one read back to the host. Equal shapes (a
    batched verify step) take one argmax over them stacked: one reduction instead of one per
    session, which on a GPU at batch 32 saved more than the copy costs."""
    if len({logits.shape for logits in all_logits}) == 1:
        return torch.stack(all_logits).argmax(dim=-1).tolist()
    flat = torch.cat([logits.argmax(dim=-1) for logits in all_logits]).tolist()
    ends = list(itertools.accumulate(logits.shape[0] for logits in all_logits))
    return [flat[end - logits.shape[0] : end] for logits, end in zip(all_logits, ends, strict=True)]


def logits_to_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Probabilities [n, vocab] (float32) for non-greedy params; rows sum to one."""
    return rows_to_probs(logits, [params] * logits.shape[0])


def rows_to_probs(logits: torch.Tensor, params: Sequence[SamplingParams]) -> torch.Tensor:
    """logits_to_probs with each row's own params (none greedy): many sessions' rows at once."""
    device, vocab = logits.device, logits.shape[-1]
    temperatures = torch.tensor([p.temperature for p in params], device=device)
    scaled = logits.float() / temperatures[:, None]
    top_ks = [p.top_k if p.top_k is not None and p.top_k < vocab else None for p in params]
    if any(k is not None for k in top_ks):
        scaled = _keep_top_k(scaled, top_ks)
    if any(p.top_p < 1.0 for p in params):
        # a row without top-p must keep every token, however its mass rounds
        top_ps = torch.tensor([p.top_p if p.top_p < 1.0 else math.inf for p in params], device=device)
        scaled = _keep_top_p(scaled, top_ps[:, None])
    return torch.softmax(scaled, dim=-1)


def _keep_top_k(scaled: torch.Tensor, ks: Sequence[int | None]) -> torch.Tensor:
    """Each row's k most likely tokens (all of a row whose k is None)."""
    kept = [k for k in ks if k is not None]
    largest = torch.topk(scaled, max(kept), dim=-1).values
    kth = largest.gather(-1, torch.tensor([[(k or 1) - 1] for k in ks], device=scaled.device))
    every = torch.tensor([[k is None] for k in ks], device=scaled.device)
    return scaled.masked_fill((scaled < kth) & ~every, float("-inf"))


def _keep_top_p(scaled: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches each row's top_p [n, 1] (inf:
    every token), and any token as likely as the least likely of them. The set is sought among
    each row's TOP_P_CANDIDATES most likely tokens first: sorting all of a large vocabulary cost
    more than the rest of a batch's decisions together."""
    threshold = _top_p_threshold(scaled, top_p, min(TOP_P_CANDIDATES, scaled.shape[-1]))
    if threshold is None:  # some row's set reaches past its candidates
        threshold = _top_p_threshold(scaled, top_p, scaled.shape[-1])
        assert threshold is not None
    return scaled.masked_fill(scaled < threshold, float("-inf"))


def _top_p_threshold(scaled: torch.Tensor, top_p: torch.Tensor, n: int) -> torch.Tensor | None:
    """Each row's least kept logit [rows, 1], looked for among its n largest; None where some row
    keeps all n of them and so might keep more."""
    largest = torch.topk(scaled, n, dim=-1).values  # in descending order
    probs = torch.exp(largest - torch.logsumexp(scaled, dim=-1, keepdim=True))
    mass_before = torch.cumsum(probs, dim=-1) - probs
    kept = (mass_before < top_p).sum(dim=-1, keepdim=True)  # at least the most likely token, mass_before 0
    unlimited = torch.isinf(top_p)
    if n < scaled.shape[-1] and bool(((kept == n) & ~unlimited).any()):
        return None
    return torch.where(unlimited, float("-inf"), largest.gather(-1, kept - 1))
