"""Request bodies of the OpenAI API, as pydantic models: types and ranges are checked here, so a bad
body becomes a 400 naming the field. Unknown fields are ignored, as OpenAI's own clients expect
servers to tolerate newer parameters. Extensions (vLLM's and ours) are marked."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StrictBool, field_validator

from edgespec.config import MAX_SEED, Limits, Mode

MAX_LOGPROBS = Limits().max_logprobs  # the cloud checks the same bound
MAX_STOP_SEQUENCES = 16
MAX_STOP_CHARS = 256
MAX_PROMPT_CHARS = 1_000_000
MAX_STOP_TOKEN_IDS = 64
MAX_MESSAGES = 1024

TokenId = Annotated[int, Field(ge=0, le=2**31 - 1)]
StopText = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]


class StreamOptions(BaseModel):
    include_usage: StrictBool = False
    continuous_usage_stats: StrictBool = False  # vLLM extension: usage on every chunk


class GenerationFields(BaseModel):
    """Fields shared by completions and chat completions."""

    model: str | None = None
    temperature: float = Field(1.0, ge=0.0, le=100.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=-1)  # vLLM extension; -1 or 0 disable it
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    stop: StopText | Annotated[list[StopText], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    stop_token_ids: list[TokenId] = Field(default_factory=list, max_length=MAX_STOP_TOKEN_IDS)  # vLLM extension
    ignore_eos: StrictBool = False  # vLLM extension
    n: int = Field(1, ge=1, le=1)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    mode: Mode | None = None  # edgespec: spec | cloud | edge for this request
    # edgespec: draft length for this request, or "auto" (chosen round by round)
    num_speculative_tokens: Annotated[int, Field(ge=0, le=64)] | Literal["auto"] | None = None
    return_token_ids: StrictBool = False  # vLLM extension: token ids in each choice

    @property
    def stop_strings(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def effective_top_k(self) -> int | None:
        return self.top_k if self.top_k is not None and self.top_k > 0 else None


PromptText = Annotated[str, Field(max_length=MAX_PROMPT_CHARS)]
PromptIds = Annotated[list[TokenId], Field(min_length=1, max_length=MAX_PROMPT_CHARS)]


class CompletionRequest(GenerationFields):
    prompt: PromptText | PromptIds | list[PromptText] | list[PromptIds]
    max_tokens: int = Field(16, ge=1)  # OpenAI's default for completions
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    echo: StrictBool = False

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, prompt: object) -> object:
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str | list) and len(prompt) != 1:
            raise ValueError("only one prompt per request is supported")
        return prompt

    @property
    def single_prompt(self) -> str | list[int]:
        """The prompt as text or token ids, unwrapped from a one-element batch."""
        prompt = self.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str | list):
            prompt = prompt[0]
        return prompt  # type: ignore[return-value]

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, echo: bool) -> bool:
        if echo:
            raise ValueError("echo is not supported")
        return echo


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(GenerationFields):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: StrictBool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)

    @property
    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def logprobs_count(self) -> int | None:
        """How many top tokens to report, or None when no logprobs were asked for."""
        return (self.top_logprobs or 0) if self.logprobs else None
