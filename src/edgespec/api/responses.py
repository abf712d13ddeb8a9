"""OpenAI response objects: completions and chat completions, whole or as stream chunks, with
usage (plus the request's speculation statistics) and logprobs in each API's own shape."""

from __future__ import annotations

import enum
import secrets
import time
from dataclasses import dataclass, field

from edgespec.engine.tokenizer import TokenizerInfo
from edgespec.metrics.stats import SpecStats
from edgespec.protocol.messages import TokenLogprobs


class Api(enum.Enum):
    COMPLETIONS = "text_completion"
    CHAT = "chat.completion"


@dataclass
class Piece:
    """What one response (or one stream chunk) carries for the single choice."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprobs] | None = None
    finish_reason: str | None = None


@dataclass(frozen=True)
class ResponseHeader:
    api: Api
    model: str
    return_token_ids: bool = False  # vLLM's extension: each choice lists its token ids
    id: str = field(default_factory=lambda: secrets.token_hex(12))
    created: int = field(default_factory=lambda: int(time.time()))

    def whole(self, piece: Piece, usage: dict[str, object], formatter: LogprobsFormatter | None) -> dict[str, object]:
        return self._object(self.api.value, [self._choice(piece, formatter, delta=False)], usage)

    def chunk(self, piece: Piece, formatter: LogprobsFormatter | None, first: bool = False) -> dict[str, object]:
        choice = self._choice(piece, formatter, delta=True)
        if self.api is Api.CHAT and first:
            choice["delta"] = {"role": "assistant", **choice["delta"]}  # type: ignore[dict-item]
        return self._object(self._chunk_type, [choice], None)

    def usage_chunk(self, usage: dict[str, object]) -> dict[str, object]:
        return self._object(self._chunk_type, [], usage)

    @property
    def _chunk_type(self) -> str:
        return "chat.completion.chunk" if self.api is Api.CHAT else "text_completion"

    def _object(
        self, kind: str, choices: list[dict[str, object]], usage: dict[str, object] | None
    ) -> dict[str, object]:
        prefix = "chatcmpl" if self.api is Api.CHAT else "cmpl"
        return {
            "id": f"{prefix}-{self.id}",
            "object": kind,
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": usage,
        }

    def _choice(self, piece: Piece, formatter: LogprobsFormatter | None, delta: bool) -> dict[str, object]:
        logprobs = formatter.format(piece.token_ids, piece.logprobs) if formatter and piece.logprobs else None
        choice: dict[str, object] = {"index": 0, "logprobs": logprobs, "finish_reason": piece.finish_reason}
        if self.api is Api.CHAT:
            message = {"content": piece.text} if delta else {"role": "assistant", "content": piece.text}
            choice["delta" if delta else "message"] = message
        else:
            choice["text"] = piece.text
        if self.return_token_ids:
            choice["token_ids"] = piece.token_ids
        return choice


class LogprobsFormatter:
    """Token logprobs in the legacy completions shape or the chat shape."""

    def __init__(self, api: Api, tokenizer: TokenizerInfo) -> None:
        self.api = api
        self.tokenizer = tokenizer
        self.text_offset = 0  # completions report where each token starts in the output text

    def format(self, token_ids: list[int], logprobs: list[TokenLogprobs]) -> dict[str, object]:
        if self.api is Api.CHAT:
            return {"content": [self._chat_entry(token, lp) for token, lp in zip(token_ids, logprobs, strict=True)]}
        return self._completion_entries(token_ids, logprobs)

    def _text(self, token: int) -> str:
        return self.tokenizer.decode([token])

    def _chat_entry(self, token: int, logprobs: TokenLogprobs) -> dict[str, object]:
        def entry(token_id: int, logprob: float) -> dict[str, object]:
            text = self._text(token_id)
            return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

        top = [entry(i, lp) for i, lp in zip(logprobs.top_ids, logprobs.top_logprobs, strict=True)]
        return entry(token, logprobs.logprob) | {"top_logprobs": top}

    def _completion_entries(self, token_ids: list[int], logprobs: list[TokenLogprobs]) -> dict[str, object]:
        texts = [self._text(token) for token in token_ids]
        offsets = []
        for text in texts:
            offsets.append(self.text_offset)
            self.text_offset += len(text)
        return {
            "tokens": texts,
            "token_logprobs": [lp.logprob for lp in logprobs],
            "top_logprobs": [self._top_dict(token, lp) for token, lp in zip(token_ids, logprobs, strict=True)],
            "text_offset": offsets,
        }

    def _top_dict(self, token: int, logprobs: TokenLogprobs) -> dict[str, float]:
        """The top tokens plus the chosen one (OpenAI returns up to n+1 entries)."""
        top: dict[str, float] = {}
        # Distinct tokens can share a text (partial UTF-8 bytes); the likelier one keeps the key.
        for token_id, logprob in zip(logprobs.top_ids, logprobs.top_logprobs, strict=True):
            top.setdefault(self._text(token_id), logprob)
        top.setdefault(self._text(token), logprobs.logprob)
        return top


def usage(prompt_tokens: int, completion_tokens: int, stats: SpecStats) -> dict[str, object]:
    """OpenAI's usage, plus the request's speculation statistics (vLLM's definitions)."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "fallback_tokens": stats.fallback_tokens,  # > 0: part of the output is the draft's alone
        "speculation": {
            "mode": stats.mode,
            "num_drafts": stats.rounds,
            "num_draft_tokens": stats.draft_tokens,
            "num_accepted_tokens": stats.accepted_tokens,
            "num_accepted_tokens_per_pos": stats.accepted_per_position,
            "acceptance_rate": stats.acceptance_rate,
            "mean_acceptance_length": stats.mean_acceptance_length,
            "cloud_forward_passes": stats.target_forwards,
            "draft_time_s": round(stats.draft_s, 6),
            "verify_time_s": round(stats.verify_s, 6),
            "network_wait_s": round(stats.network_wait_s, 6),
            "bytes_up": stats.bytes_up,
            "bytes_down": stats.bytes_down,
            "link_losses": stats.link_losses,
            "cloud_burst_tokens": stats.burst_tokens,  # decoded by the cloud alone (auto, on a slow link)
            "lookahead_hits": stats.lookahead_hits,  # rounds whose block was drafted while the last one flew
            "lookahead_misses": stats.lookahead_misses,
        },
    }
