"""Log-probabilities of chosen tokens, as OpenAI reports them: from the model's raw logits, before
temperature and top-k/top-p (the same convention as vLLM's default)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgespec.protocol.messages import TokenLogprobs


@dataclass(frozen=True)
class ScoredToken:
    """One decoded token and, when asked for, its logprobs."""

    token: int
    logprobs: TokenLogprobs | None


def token_logprobs(logits: torch.Tensor, tokens: list[int], top_n: int) -> list[TokenLogprobs]:  # logits [n, vocab]
    """For each row i: the log-probability of tokens[i] and the top_n most likely tokens."""
    logprobs = torch.log_softmax(logits[: len(tokens)].float(), dim=-1)
    chosen = logprobs.gather(1, torch.tensor(tokens, dtype=torch.long, device=logits.device)[:, None])[:, 0]
    top_values, top_ids = logprobs.topk(top_n, dim=-1) if top_n else (logprobs[:, :0], logprobs[:, :0].long())
    return [
        TokenLogprobs(logprob=float(value), top_ids=ids, top_logprobs=values)
        for value, ids, values in zip(chosen.tolist(), top_ids.tolist(), top_values.tolist(), strict=True)
    ]
