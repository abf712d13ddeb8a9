"""The draft model's side: propose a block of k tokens, or decode alone in edge mode.
Synchronous; runs on the draft's worker thread."""

from __future__ import annotations

import torch

from edgespec.config import SamplingParams
from edgespec.engine.base import Engine, KVSession, extend, missing_tokens
from edgespec.protocol.messages import Draft, SparseDist
from edgespec.sampling import sparse
from edgespec.sampling.logprobs import ScoredToken, token_logprobs
from edgespec.sampling.probs import greedy_tokens, logits_to_probs
from edgespec.sampling.rng import Stream, uniform
from edgespec.sampling.verify import sample_dense


class Drafter:
    def __init__(self, engine: Engine, support: int) -> None:
        self.engine = engine
        self.support = support  # largest draft distribution sent uplink

    def propose(self, kv: KVSession, committed: list[int], k: int, sampling: SamplingParams, seed: int) -> Draft:
        """k drafted tokens after `committed`, with their distributions when sampling."""
        if k == 0:
            return Draft(tokens=[], q=None if sampling.greedy else [])
        tokens: list[int] = []
        dists: list[SparseDist] = []
        logits = extend(self.engine, kv, committed, [], 1)  # [1, vocab]
        for i in range(k):
            token, dist = self._choose(logits[0], sampling, seed, len(committed) + i)
            tokens.append(token)
            if dist is not None:
                dists.append(dist)
            if i + 1 < k:
                logits = self.engine.forward(kv, [token], 1)
        return Draft(tokens=tokens, q=None if sampling.greedy else dists)

    def read_along(self, kv: KVSession, committed: list[int]) -> tuple[int, list[int]]:
        """Bring the KV up to `committed` and return the draft's greedy guesses for every position
        it just read, and the next: (position of the first guess, guesses)."""
        missing = missing_tokens(self.engine, kv, committed, [])
        logits = self.engine.forward(kv, missing, len(missing))
        return len(committed) - len(missing) + 1, greedy_tokens(logits)

    def next_token(
        self, kv: KVSession, committed: list[int], sampling: SamplingParams, seed: int, logprobs: int | None
    ) -> ScoredToken:
        """Edge mode: the draft model's own next token, from its full distribution."""
        logits = extend(self.engine, kv, committed, [], 1)  # [1, vocab]
        if sampling.greedy:
            token = greedy_tokens(logits)[0]
        else:
            token = sample_dense(logits_to_probs(logits, sampling)[0], uniform(seed, Stream.DRAFT, len(committed)))
        reported = None if logprobs is None else token_logprobs(logits, [token], logprobs)[0]
        return ScoredToken(token, reported)

    def _choose(
        self, logits: torch.Tensor, sampling: SamplingParams, seed: int, position: int
    ) -> tuple[int, SparseDist | None]:  # logits [vocab]
        if sampling.greedy:
            return int(logits.argmax()), None
        dist = sparse.quantize(logits_to_probs(logits[None], sampling)[0], self.support)
        return sparse.sample(dist, uniform(seed, Stream.DRAFT, position)), dist
