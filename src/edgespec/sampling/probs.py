"""Logits to the distribution a request samples from: temperature, then top-k, then top-p."""

from __future__ import annotations

import itertools

import torch

from edgespec.config import SamplingParams


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
    scaled = logits.float() / params.temperature
    if params.top_k is not None and params.top_k < scaled.shape[-1]:
        scaled = _keep_top_k(scaled, params.top_k)
    if params.top_p < 1.0:
        scaled = _keep_top_p(scaled, params.top_p)
    return torch.softmax(scaled, dim=-1)


def _keep_top_k(scaled: torch.Tensor, k: int) -> torch.Tensor:
    kth = torch.topk(scaled, k, dim=-1).values[..., -1:]
    return scaled.masked_fill(scaled < kth, float("-inf"))


def _keep_top_p(scaled: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches top_p."""
    sorted_logits, order = torch.sort(scaled, dim=-1, descending=True)
    sorted_probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
    drop_sorted = mass_before >= top_p  # the most likely token always has mass_before 0: kept
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return scaled.masked_fill(drop, float("-inf"))
