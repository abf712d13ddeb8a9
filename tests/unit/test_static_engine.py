"""The static engine (the GPU fast path, run eagerly here) computes what the transformers model
computes, for each architecture it covers: prefill, verify blocks, after truncation, and several
sessions side by side in one cache; and the compact forward batches sessions at different
positions, padded, without mixing them."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from edgespec.engine.static_engine import StaticEngine, prompt_size
from edgespec.engine.torch_engine import TorchEngine
from tests.conftest import TinyPair

SMALL = {
    "vocab_size": 320,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "initializer_range": 0.3,
    "max_position_embeddings": 512,
}
TOLERANCE = 1e-4


def build(architecture: str, tiny_pair: TinyPair) -> PreTrainedModel:
    torch.manual_seed(3)
    if architecture == "qwen2":  # the suite's tiny target, with q/k/v biases
        return AutoModelForCausalLM.from_pretrained(tiny_pair.target).eval()
    if architecture == "qwen3":  # per-head query and key norms
        return Qwen3ForCausalLM(Qwen3Config(**SMALL, head_dim=16)).eval()
    return LlamaForCausalLM(LlamaConfig(**SMALL)).eval()


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and float((a - b).abs().max()) < TOLERANCE


@pytest.mark.parametrize("architecture", ["qwen2", "qwen3", "llama"])
def test_logits_equal_the_transformers_model_through_a_session_life(architecture: str, tiny_pair: TinyPair) -> None:
    model = build(architecture, tiny_pair)
    reference, static = TorchEngine(model), StaticEngine(model, max_sessions=4, max_context=256)
    ours, theirs = static.new_session(), reference.new_session()
    steps = [(list(range(5, 45)), 1), ([7, 8, 9, 10], 4), ([11], 1)]
    for tokens, n_logits in steps:
        assert close(static.forward(ours, tokens, n_logits), reference.forward(theirs, tokens, n_logits))
    static.truncate(ours, 42)  # a rejected tail
    reference.truncate(theirs, 42)
    assert close(static.forward(ours, [12, 13, 14], 3), reference.forward(theirs, [12, 13, 14], 3))
    other, other_reference = static.new_session(), reference.new_session()  # another slot, same cache
    assert close(static.forward(other, [3, 4, 5], 3), reference.forward(other_reference, [3, 4, 5], 3))
    assert close(static.forward(ours, [15], 1), reference.forward(theirs, [15], 1))


@torch.inference_mode()
def test_the_compact_forward_batches_padded_sessions_without_mixing_them(tiny_pair: TinyPair) -> None:
    model = build("qwen2", tiny_pair)
    static = StaticEngine(model, max_sessions=4, max_context=256)
    compact, kv = static.model, static.kv
    first, second = [5, 6, 7, 8, 9, 10], [40, 41, 42]
    alone = []
    for slot, tokens in enumerate([first, second]):
        positions = torch.arange(len(tokens))[None]
        alone.append(compact.forward(kv, torch.tensor([slot]), torch.tensor([tokens]), positions, len(tokens), 2)[0])
    # both again, one call: the second is padded to six tokens after its own, in slots 2 and 3
    tokens = torch.tensor([first, [*second, 0, 0, 0]])
    positions = torch.arange(6).expand(2, 6)
    together = compact.forward(kv, torch.tensor([2, 3]), tokens, positions, 6, 6)
    assert close(together[0, -2:], alone[0])
    assert close(together[1, 1:3], alone[1])  # its real last two positions


@torch.inference_mode()
def test_a_prompt_padded_past_its_end_gives_the_logits_and_cache_of_the_prompt_alone(tiny_pair: TinyPair) -> None:
    """As a prompt's graph runs it (padded to its size, its real length beside it)."""
    model = build("qwen3", tiny_pair)
    static = StaticEngine(model, max_sessions=4, max_context=256)
    compact, kv = static.model, static.kv
    prompt, follow_up = list(range(5, 28)), [3, 4, 5]
    padded = torch.tensor([prompt + [0] * 9])
    with_padding = compact.forward(kv, torch.tensor([0]), padded, torch.arange(32)[None], 32, 4, torch.tensor([23]))
    alone = compact.forward(kv, torch.tensor([1]), torch.tensor([prompt]), torch.arange(23)[None], 23, 4)
    assert close(with_padding, alone)
    later = torch.arange(23, 26)[None]  # over the padding's keys in slot 0
    after = [compact.forward(kv, torch.tensor([slot]), torch.tensor([follow_up]), later, 26, 3) for slot in (0, 1)]
    assert close(*after)


@pytest.mark.parametrize("length", [17, 23, 64, 65, 300, 512, 513, 2047])
def test_prompt_sizes_pad_at_most_an_eighth_of_a_prompt(length: int) -> None:
    size = prompt_size(length)
    assert length <= size <= length * 9 / 8
    assert prompt_size(size) == size  # a size is its own


def test_prompt_sizes_are_eight_per_doubling() -> None:
    assert len({prompt_size(n) for n in range(257, 513)}) == 8


def test_slots_are_taken_at_the_first_forward_bounded_and_given_back(tiny_pair: TinyPair) -> None:
    static = StaticEngine(build("qwen2", tiny_pair), max_sessions=2, max_context=64)
    sessions = [static.new_session() for _ in range(3)]
    static.forward(sessions[0], [5], 1)
    static.forward(sessions[1], [5], 1)
    with pytest.raises(RuntimeError, match="all 2 KV slots are in use"):
        static.forward(sessions[2], [5], 1)
    static.release(sessions[0])  # as the cloud does when a session closes
    static.forward(sessions[2], [5], 1)
    assert sessions[2].cache is not None


def test_a_closed_engine_refuses_work(tiny_pair: TinyPair) -> None:
    """Closing drops its CUDA graphs: answering eagerly instead would hide the mistake behind
    steps many times slower (a benchmark once measured such an engine)."""
    static = StaticEngine(build("qwen2", tiny_pair), max_sessions=2, max_context=64)
    session = static.new_session()
    static.forward(session, [5], 1)
    static.close()
    with pytest.raises(RuntimeError, match="closed"):
        static.forward(session, [6], 1)


def test_the_kv_budget_sets_the_number_of_slots(tiny_pair: TinyPair) -> None:
    model = build("qwen2", tiny_pair)
    one_slot = StaticEngine(model, max_sessions=64, max_context=64, kv_budget=1).max_sessions
    assert one_slot == 1  # always at least one
    per_slot = 2 * 2 * 2 * (64 + 16) * 16 * 4  # K and V, layers, kv heads, positions, head dim, float32
    assert StaticEngine(model, max_sessions=64, max_context=64, kv_budget=per_slot * 11).max_sessions == 10


def test_an_architecture_it_does_not_cover_is_refused() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    with pytest.raises(ValueError, match="the static engine runs"):
        StaticEngine(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100)))
