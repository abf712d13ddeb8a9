"""The tokenizer side of a model: identity for the handshake, EOS ids and prompt rendering."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import msgspec
from transformers import PreTrainedTokenizerBase

from edgespec.protocol.messages import TokenizerId

# Settings that change how a batch is padded or cut, not which ids a text maps to.
_NOT_IDENTITY = ("truncation", "padding")


def fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A digest of the vocabulary, merges, special tokens and text pipeline (not the chat template)."""
    spec = msgspec.json.decode(tokenizer.backend_tokenizer.to_str())
    for key in _NOT_IDENTITY:
        spec.pop(key, None)
    canonical = msgspec.json.encode(spec, order="sorted")  # compact UTF-8, keys sorted; 2x json's speed
    return hashlib.sha256(canonical).hexdigest()[:32]


@dataclass(frozen=True)
class TokenizerInfo:
    tokenizer: PreTrainedTokenizerBase
    name: str
    eos_token_ids: tuple[int, ...]

    @functools.cached_property  # fingerprinting a 150k vocabulary takes a second
    def identity(self) -> TokenizerId:
        return TokenizerId(name=self.name[-256:], fingerprint=fingerprint(self.tokenizer))

    @property
    def chat_template(self) -> str | None:
        template = self.tokenizer.chat_template
        return template if isinstance(template, str) else None

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def render_chat(self, messages: list[dict[str, str]], template: str | None = None) -> list[int]:
        """Prompt ids for a chat. Pass the target's template: both sides must render alike."""
        text = self.tokenizer.apply_chat_template(
            messages, chat_template=template or self.chat_template, add_generation_prompt=True, tokenize=False
        )
        return self.encode(str(text))
