"""Benchmark prompts, drawn as vLLM's serving benchmark draws them: `random` (token ids turned into
text, lengths spread by a range ratio) or `sharegpt` (first human turn of each conversation in a
local JSON file, the reply's length as the output length)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgespec.engine.tokenizer import TokenizerInfo

SHAREGPT_MIN_TOKENS = 4  # vLLM's filters: drop very short prompts or replies ...
SHAREGPT_MAX_PROMPT = 1024  # ... and very long prompts ...
SHAREGPT_MAX_TOTAL = 2048  # ... or conversations


@dataclass(frozen=True)
class SampleRequest:
    prompt: str
    prompt_len: int
    output_len: int


def random_requests(
    tokenizer: TokenizerInfo, count: int, input_len: int, output_len: int, range_ratio: float, seed: int
) -> list[SampleRequest]:
    if not 0.0 <= range_ratio < 1.0:
        raise ValueError(f"--random-range-ratio must be in [0, 1), got {range_ratio}")
    if input_len < 1 or output_len < 1:
        raise ValueError("--random-input-len and --random-output-len must be at least 1")
    rng = np.random.default_rng(seed)
    vocab = len(tokenizer.tokenizer)
    input_lens = rng.integers(int(input_len * (1 - range_ratio)), int(input_len * (1 + range_ratio)) + 1, count)
    output_lens = rng.integers(int(output_len * (1 - range_ratio)), int(output_len * (1 + range_ratio)) + 1, count)
    offsets = rng.integers(0, vocab, count)
    requests = []
    for i in range(count):
        ids = [(int(offsets[i]) + i + j) % vocab for j in range(max(int(input_lens[i]), 1))]
        prompt = tokenizer.decode(ids)
        requests.append(SampleRequest(prompt, len(tokenizer.encode(prompt)), max(int(output_lens[i]), 1)))
    return requests


def sharegpt_requests(
    tokenizer: TokenizerInfo, path: Path, count: int, output_len: int | None, seed: int
) -> list[SampleRequest]:
    try:
        conversations = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read the ShareGPT file {path}: {exc}") from None
    if not isinstance(conversations, list):
        raise ValueError(f"{path} is not a ShareGPT file (a JSON list of conversations)")
    random.Random(seed).shuffle(conversations)
    requests: list[SampleRequest] = []
    for conversation in conversations:
        turns = conversation.get("conversations", []) if isinstance(conversation, dict) else []
        if len(turns) < 2 or not all(isinstance(turn, dict) and "value" in turn for turn in turns[:2]):
            continue
        prompt, reply = str(turns[0]["value"]), str(turns[1]["value"])
        prompt_len, reply_len = len(tokenizer.encode(prompt)), len(tokenizer.encode(reply))
        wanted = output_len or reply_len
        if _keep(prompt_len, wanted, fixed_output=output_len is not None):
            requests.append(SampleRequest(prompt, prompt_len, wanted))
        if len(requests) == count:
            return requests
    raise ValueError(f"{path} holds only {len(requests)} usable conversations, {count} were asked for")


def _keep(prompt_len: int, output_len: int, fixed_output: bool) -> bool:
    if prompt_len < SHAREGPT_MIN_TOKENS or (output_len < SHAREGPT_MIN_TOKENS and not fixed_output):
        return False
    return prompt_len <= SHAREGPT_MAX_PROMPT and prompt_len + output_len <= SHAREGPT_MAX_TOTAL
