"""The Triton kernels of the GPU verify step (engine/kernels.py), run by Triton's interpreter on
CPU tensors: the fused forward computes what the unfused compact forward computes, logits and the
keys and values it leaves in the cache, for each architecture, with sessions at different
positions, a session padded after its real tokens, a padding session in the scratch slot,
attention both split over key ranges and whole, and a prefill longer than one block of rows."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from edgespec.engine.fused_forward import fused_forward
from edgespec.engine.kernels import skinny_linear
from edgespec.engine.static_engine import StaticEngine
from tests.conftest import TinyPair
from tests.unit.test_static_engine import build

pytestmark = pytest.mark.skipif(
    torch.cuda.is_available(), reason="the interpreter runs only without CUDA; tests/gpu runs the kernels on a GPU"
)

CONTEXTS = [40, 130, 7, 200]  # prompt lengths of the sessions in slots 0..3


def prefilled(architecture: str, tiny_pair: TinyPair) -> StaticEngine:
    engine = StaticEngine(build(architecture, tiny_pair), max_sessions=5, max_context=256)
    torch.manual_seed(5)
    for slot, length in enumerate(CONTEXTS):
        tokens = torch.randint(0, 300, (1, length))
        engine.model.forward(engine.kv, torch.tensor([slot]), tokens, torch.arange(length)[None], length, 1)
    return engine


def cache_of(engine: StaticEngine) -> list[torch.Tensor]:
    return [tensor.clone() for tensor in engine.kv.keys + engine.kv.values]


@pytest.mark.parametrize("architecture", ["qwen2", "qwen3", "llama"])
@pytest.mark.parametrize("sessions", [3, 4])  # 3: attention split over key ranges; 4: whole
@torch.inference_mode()
def test_the_fused_step_equals_the_unfused_one(architecture: str, sessions: int, tiny_pair: TinyPair) -> None:
    engine = prefilled(architecture, tiny_pair)
    new = 5
    slots = torch.tensor([*range(sessions - 1), engine.max_sessions])  # the last one pads, in the scratch slot
    starts = torch.tensor([*CONTEXTS[: sessions - 1], 0])  # the engine pads from position 0 of the spare slot
    positions = starts[:, None] + torch.arange(new)
    tokens = torch.randint(0, 300, (sessions, new))
    tokens[0, 3:] = 0  # the first session has three real tokens, padded after them
    before = cache_of(engine)
    expected = engine.model.forward(engine.kv, slots, tokens, positions, 256, new)
    written = cache_of(engine)
    for tensor, old in zip(engine.kv.keys + engine.kv.values, before, strict=True):
        tensor.copy_(old)

    fused = fused_forward(engine.model, engine.kv, slots, tokens, positions, 256, new)

    real = [slice(0, 3), *[slice(0, new)] * (sessions - 2)]  # the padding session's logits are never read
    for index, rows in enumerate(real):
        assert torch.allclose(fused[index, rows], expected[index, rows], atol=1e-4, rtol=1e-4)
    for tensor, wanted in zip(cache_of(engine), written, strict=True):
        assert torch.allclose(tensor, wanted, atol=1e-5)


@pytest.mark.parametrize("architecture", ["qwen3", "llama"])
@torch.inference_mode()
def test_a_fused_prefill_equals_the_unfused_one(architecture: str, tiny_pair: TinyPair) -> None:
    """A prompt of 70 tokens: its query rows span several blocks of the attention kernel."""
    engine = prefilled(architecture, tiny_pair)
    tokens = torch.randint(0, 300, (1, 70))
    positions, slot = torch.arange(70)[None], torch.tensor([3])
    expected = engine.model.forward(engine.kv, slot, tokens, positions, 70, 70)
    written = cache_of(engine)
    fused = fused_forward(engine.model, engine.kv, slot, tokens, positions, 70, 70)
    assert torch.allclose(fused, expected, atol=1e-4, rtol=1e-4)
    for tensor, wanted in zip(cache_of(engine), written, strict=True):
        assert torch.allclose(tensor, wanted, atol=1e-5)


@pytest.mark.parametrize("rows", [1, 5, 16])
def test_the_skinny_matrix_product_equals_linear(rows: int) -> None:
    torch.manual_seed(7)
    x, weight, bias = torch.randn(rows, 256), torch.randn(40, 256), torch.randn(40)  # 40: a partial strip
    assert torch.allclose(skinny_linear(x, weight, bias), torch.nn.functional.linear(x, weight, bias), atol=1e-4)
    assert torch.allclose(skinny_linear(x, weight), x @ weight.T, atol=1e-4)
