"""When a request ends: an end-of-sequence token (unless ignored), a stop token, or the budget."""

from __future__ import annotations

import enum


class FinishReason(enum.Enum):
    STOP = "stop"  # an end-of-sequence or stop token
    LENGTH = "length"  # max_tokens reached


class StopChecker:
    def __init__(
        self, eos_token_ids: tuple[int, ...], max_tokens: int, ignore_eos: bool, stop_token_ids: tuple[int, ...] = ()
    ) -> None:
        self._eos = frozenset(stop_token_ids) | (frozenset() if ignore_eos else frozenset(eos_token_ids))
        self._remaining = max_tokens

    @property
    def remaining(self) -> int:
        return self._remaining

    def admit(self, tokens: list[int]) -> tuple[list[int], FinishReason | None]:
        """The part of `tokens` that belongs to the output (the stopping token excluded), and why it ended."""
        for i, token in enumerate(tokens):
            if token in self._eos:
                self._remaining -= i
                return tokens[:i], FinishReason.STOP
        kept = tokens[: self._remaining]
        self._remaining -= len(kept)
        return kept, FinishReason.LENGTH if self._remaining == 0 else None
