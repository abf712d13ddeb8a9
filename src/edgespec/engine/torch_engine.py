"""The torch backend: transformers model code, a DynamicCache per session, exact on CPU."""

from __future__ import annotations

import inspect

import torch
from transformers import DynamicCache, PreTrainedModel

from edgespec.engine.base import KVSession, Work

UNKNOWN_CONTEXT = 2**31 - 1  # a config without max_position_embeddings: the cloud's limit decides


def _cache_keyword(model: PreTrainedModel) -> str:
    # transformers 5.2x renamed past_key_values to cache; the GPU machine's 5.17 still uses the old name
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


class TorchEngine:
    numerics = "torch: exact; speculative output equals the target's own decoding"
    batch_tokens = 1 << 20  # forward_many runs its works one by one, so any number fits
    max_sessions = 1 << 20  # each session's cache grows on its own: memory is the only bound

    def __init__(self, model: PreTrainedModel) -> None:
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        self.max_context = int(getattr(model.config, "max_position_embeddings", UNKNOWN_CONTEXT))
        self._cache_kw = _cache_keyword(model)

    def new_session(self) -> KVSession:
        return KVSession(cache=DynamicCache(config=self.model.config))

    @torch.inference_mode()
    def forward(self, session: KVSession, tokens: list[int], n_logits: int) -> torch.Tensor:
        ids = torch.tensor([tokens], dtype=torch.long, device=self.device)
        kwargs = {self._cache_kw: session.cache}
        out = self.model(input_ids=ids, use_cache=True, logits_to_keep=n_logits, **kwargs)
        session.tokens.extend(tokens)
        return out.logits[0, -n_logits:].float()  # [n_logits, vocab]

    def forward_many(self, works: list[Work]) -> list[torch.Tensor]:
        """One forward per session: sessions of different lengths share no padded batch here."""
        return [self.forward(work.session, work.tokens, work.n_logits) for work in works]

    def truncate(self, session: KVSession, length: int) -> None:
        surplus = len(session.tokens) - length
        if surplus > 0:
            session.cache.crop(-surplus)  # a negative count removes that many tokens
            del session.tokens[length:]

    def release(self, session: KVSession) -> None:
        session.cache = None
        session.tokens.clear()

    def close(self) -> None:
        """Nothing to free by hand: the garbage collector owns torch's memory."""
