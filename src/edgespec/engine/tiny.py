"""Tiny real models with random weights: a trained byte-level BPE tokenizer and two small Qwen2
networks, a target and a draft that agrees with it most of the time. They load through the same
loader as real models and make any machine able to run the whole system in seconds: the test
suite, smoke tests and load runs (`--model tiny-target`, `--model tiny-draft`). Their text is
gibberish; their speculation statistics are real."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import TypeVar

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedModel, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "def quicksort(arr): return arr if len(arr) < 2 else quicksort(left) + middle + quicksort(right)",
    "The invention of the printing press changed how ideas travelled across Europe.",
    "Speculative decoding drafts tokens on the edge and verifies them in the cloud.",
    "for i in range(10): print(i * i)  # squares of the first ten numbers",
    "A hash map stores keys and values and finds them in constant time on average.",
] * 20


def build_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(vocab_size: int, seed: int, layers: int = 2) -> Qwen2ForCausalLM:
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        initializer_range=0.3,  # peaked logits: few near-ties, distributions with real structure
    )
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config).eval()


ModelT = TypeVar("ModelT", bound=PreTrainedModel)


def perturbed_copy(model: ModelT, noise: float, seed: int) -> ModelT:
    """A draft that agrees with its target often but not always (of the target's architecture)."""
    draft = type(model)(model.config).eval()
    draft.load_state_dict(model.state_dict())
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in draft.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * noise * param.std())
    return draft


def save(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, folder: Path) -> Path:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


TINY_VOCAB = 320


def ensure_tiny_pair(root: Path) -> Path:
    """`root` holding `tiny-target/` and `tiny-draft/`, built on first use. The pair is built aside
    and renamed into place, so processes starting together never see half of it."""
    if root.is_dir():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=root.parent))
    tokenizer = build_tokenizer(TINY_VOCAB)
    target = build_model(len(tokenizer), seed=0)
    save(target, tokenizer, staging / "tiny-target")
    save(perturbed_copy(target, noise=0.02, seed=1), tokenizer, staging / "tiny-draft")
    with contextlib.suppress(OSError):  # another process won the race: its pair is the same
        os.rename(staging, root)
    return root
