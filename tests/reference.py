"""What the target alone produces, computed with plain transformers outside edgespec."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM


def reference_greedy(model_path: Path, prompt: list[int], max_tokens: int) -> list[int]:
    """Plain transformers greedy decoding, end-of-sequence ignored."""
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt]), max_new_tokens=max_tokens, do_sample=False, eos_token_id=None, pad_token_id=0
        )
    return out[0, len(prompt) :].tolist()


def reference_logprobs(model_path: Path, prompt: list[int], output: list[int]) -> list[float]:
    """The target's log-probability of each output token after the prompt and the tokens before it."""
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    with torch.no_grad():
        logits = model(torch.tensor([prompt + output])).logits[0, len(prompt) - 1 : -1]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return logprobs.gather(1, torch.tensor(output)[:, None])[:, 0].tolist()
