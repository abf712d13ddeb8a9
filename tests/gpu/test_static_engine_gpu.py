"""The static engine on a GPU (skipped without one; run on the lent GPU machines): the fused step,
replayed from CUDA graphs, computes what transformers computes, for sessions verified together
while another session's long prefill shares their batch."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from edgespec.engine.base import Work
from edgespec.engine.cuda_graphs import GraphKey
from edgespec.engine.static_engine import StaticEngine
from edgespec.engine.torch_engine import TorchEngine

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

SMALL = {
    "vocab_size": 512, "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
    "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 32, "initializer_range": 0.3,
    "max_position_embeddings": 1024,
}  # fmt: skip
TOLERANCE = 2e-2  # float32 matrix products on tensor cores (TF32) against transformers' own


@torch.inference_mode()
def test_a_prefill_does_not_take_the_rounds_beside_it_off_the_graph() -> None:
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(Qwen3Config(**SMALL)).eval().cuda()
    engine, reference = StaticEngine(model, max_sessions=4, max_context=512), TorchEngine(model)
    prompts = [torch.randint(0, 512, (n,)).tolist() for n in (40, 90, 300)]
    ours = [engine.new_session() for _ in prompts]
    theirs = [reference.new_session() for _ in prompts]
    for session, twin, prompt in zip(ours[:2], theirs[:2], prompts[:2], strict=True):
        engine.forward(session, prompt, 1)
        reference.forward(twin, prompt, 1)

    rounds = [[7, 8, 9, 10, 11], [12, 13, 14]]
    works = [Work(s, tokens, len(tokens)) for s, tokens in zip(ours[:2], rounds, strict=True)]
    got = engine.forward_many([*works, Work(ours[2], prompts[2], 1)])  # the third session opens

    assert len(engine.graphs or []) >= 1  # the two rounds were replayed
    wanted = [reference.forward(t, tokens, len(tokens)) for t, tokens in zip(theirs[:2], rounds, strict=True)]
    wanted.append(reference.forward(theirs[2], prompts[2], 1))
    for ours_logits, their_logits in zip(got, wanted, strict=True):
        relative = (ours_logits.float() - their_logits.float()).norm() / their_logits.float().norm()
        assert relative < TOLERANCE
        assert torch.equal(ours_logits.argmax(-1), their_logits.argmax(-1))


@torch.inference_mode()
def test_one_graph_serves_sessions_of_every_context_length() -> None:
    """A graph is captured per (sessions, new tokens): a new context length is no new shape."""
    torch.manual_seed(1)
    model = Qwen3ForCausalLM(Qwen3Config(**SMALL)).eval().cuda()
    engine, reference = StaticEngine(model, max_sessions=4, max_context=1000), TorchEngine(model)
    for length in (20, 700):
        prompt = torch.randint(0, 512, (length,)).tolist()
        ours, theirs = engine.new_session(), reference.new_session()
        engine.forward(ours, prompt, 1)
        reference.forward(theirs, prompt, 1)
        got, wanted = engine.forward(ours, [5, 6, 7, 8], 4), reference.forward(theirs, [5, 6, 7, 8], 4)
        relative = (got.float() - wanted.float()).norm() / wanted.float().norm()
        assert relative < TOLERANCE  # (argmaxes may differ: random weights give near ties, TF32 rounds them)
        engine.release(ours)
    assert len(rounds_captured(engine)) == 1


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_an_engine_on_the_second_gpu_serves_from_a_thread_that_never_chose_a_gpu() -> None:
    """Such a thread's current GPU is the first (the cloud's model worker is one), and Triton
    launches on the current GPU: the engine must make its own current."""
    torch.manual_seed(2)
    model = Qwen3ForCausalLM(Qwen3Config(**SMALL)).eval().to("cuda:1")
    engine, reference = StaticEngine(model, max_sessions=2, max_context=512), TorchEngine(model)
    prompt = torch.randint(0, 512, (60,)).tolist()
    ours, theirs = engine.new_session(), reference.new_session()
    with ThreadPoolExecutor(max_workers=1) as worker:
        worker.submit(engine.forward, ours, prompt, 1).result()
        got = worker.submit(engine.forward, ours, [5, 6, 7, 8, 9], 5).result()
    reference.forward(theirs, prompt, 1)
    wanted = reference.forward(theirs, [5, 6, 7, 8, 9], 5)
    assert got.device == torch.device("cuda:1") and len(engine.graphs or []) >= 1
    relative = (got.float() - wanted.float()).norm() / wanted.float().norm()
    assert relative < TOLERANCE


def test_the_skinny_kernel_is_tuned_for_every_weight_shape_at_start_up() -> None:
    """Tuning on first use would stall every session for seconds mid-serving."""
    from edgespec.engine import kernels

    model = Qwen3ForCausalLM(Qwen3Config(**SMALL)).eval().cuda()
    StaticEngine(model, max_sessions=2, max_context=256)
    tuned = {key[:2] for key in kernels._tuned_skinny_linear.cache}  # type: ignore[union-attr]
    hidden, inner, heads = SMALL["hidden_size"], SMALL["intermediate_size"], SMALL["num_attention_heads"]
    qkv = (heads + 2 * SMALL["num_key_value_heads"]) * SMALL["head_dim"]
    wanted = {(qkv, hidden), (hidden, heads * SMALL["head_dim"]), (2 * inner, hidden), (hidden, inner)}
    assert wanted | {(SMALL["vocab_size"], hidden)} <= tuned


def test_graphs_captured_ahead_serve_every_batch_size_without_a_capture() -> None:
    model = Qwen3ForCausalLM(Qwen3Config(**SMALL)).eval().cuda()
    engine = StaticEngine(model, max_sessions=5, max_context=256)
    engine.capture_ahead([1, 5])
    assert len(rounds_captured(engine)) == 2 * 4  # batches of 1, 2, 4 and 8 sessions, for each round size
    prompts = len(engine.graphs or []) - 2 * 4
    assert prompts == 8 * 4  # 8 sizes per doubling from 17 tokens up to the 256 of the context
    sessions = [engine.new_session() for _ in range(5)]
    for session in sessions:
        engine.forward(session, list(range(1, 21)), 1)  # a prompt: the graph for 20 tokens
    engine.forward_many([Work(s, [4] * 5, 5) for s in sessions])  # 5 sessions: the graph for 8
    assert len(engine.graphs or []) == 8 + prompts


@torch.inference_mode()
def test_after_capture_ahead_no_round_size_or_long_prompt_compiles_a_kernel() -> None:
    """Each compile met while serving stalls every waiting session (~0.5 s for Qwen3-8B's shape)."""
    model = Qwen3ForCausalLM(Qwen3Config(**(SMALL | {"max_position_embeddings": 2048}))).eval().cuda()
    engine = StaticEngine(model, max_sessions=8, max_context=2048)
    engine.capture_ahead([1, 5])
    compiled = kernels_compiled()
    for length in (1531, 1536):  # past the prompt graphs (eager): Triton tells multiples of 16 apart
        prompted = engine.new_session()
        engine.forward(prompted, [i % 500 for i in range(length)], 1)
        engine.release(prompted)
    sessions = [engine.new_session() for _ in range(8)]
    for session in sessions:
        engine.forward(session, list(range(20)), 1)
    for q in (2, 3, 9, 16):  # round sizes with no graph captured ahead
        for batch in (1, 8):
            engine.forward_many([Work(s, [4] * q, q) for s in sessions[:batch]])
    assert kernels_compiled() == compiled


def kernels_compiled() -> int:
    """Kernel binaries Triton has compiled in this process for the fused step's kernels."""
    from edgespec.engine import kernels

    jitted = [kernels._add_rms_norm, kernels._silu_mul, kernels._rotate_and_store, kernels._attention]
    jitted += [kernels._combine, kernels._skinny_linear]
    return sum(len(caches[0]) for function in jitted for caches in function.device_caches.values())


@torch.inference_mode()
def test_prompts_replay_a_graph_padded_to_their_size_and_leave_no_trace_of_the_padding() -> None:
    torch.manual_seed(4)
    model = Qwen3ForCausalLM(Qwen3Config(**SMALL)).eval().cuda()
    engine, reference = StaticEngine(model, max_sessions=4, max_context=512), TorchEngine(model)
    for length, n_logits in ((300, 1), (310, 5)):  # both padded to 320 rows; the second with a draft
        prompt = torch.randint(0, 512, (length,)).tolist()
        ours, theirs = engine.new_session(), reference.new_session()
        steps = [(prompt, n_logits), ([5, 6, 7, 8], 4)]  # then a round where the padding's keys were
        for tokens, n in steps:
            got, wanted = engine.forward(ours, tokens, n), reference.forward(theirs, tokens, n)
            assert got.shape == wanted.shape
            assert (got.float() - wanted.float()).norm() / wanted.float().norm() < TOLERANCE
    assert engine.graphs is not None
    assert [key.new_tokens for key in engine.graphs if key.padded] == [320]


@torch.inference_mode()
def test_prompts_of_one_size_opening_together_each_get_their_own_logits() -> None:
    """They replay one graph, one after the other, within one call."""
    torch.manual_seed(6)
    model = Qwen3ForCausalLM(Qwen3Config(**SMALL)).eval().cuda()
    engine, reference = StaticEngine(model, max_sessions=4, max_context=512), TorchEngine(model)
    prompts = [torch.randint(0, 512, (300,)).tolist() for _ in range(3)]
    got = engine.forward_many([Work(engine.new_session(), prompt, 1) for prompt in prompts])
    for logits, prompt in zip(got, prompts, strict=True):
        wanted = reference.forward(reference.new_session(), prompt, 1)
        assert (logits.float() - wanted.float()).norm() / wanted.float().norm() < TOLERANCE


def rounds_captured(engine: StaticEngine) -> list[GraphKey]:
    assert engine.graphs is not None
    return [key for key in engine.graphs if not key.padded]


@pytest.mark.skipif(torch.cuda.get_device_capability()[0] < 9 if torch.cuda.is_available() else True,
                    reason="needs a Hopper or newer GPU")  # fmt: skip
@torch.inference_mode()
def test_kernels_launched_early_compute_the_same_bits_as_launched_in_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    """Launched early, a kernel waits in itself for the one before: no read of a half-written input."""
    from edgespec.engine import kernels

    torch.manual_seed(2)
    model = Qwen3ForCausalLM(Qwen3Config(**SMALL)).eval().cuda().to(torch.bfloat16)
    prompt, rounds = torch.randint(0, 512, (200,)).tolist(), [[i, i + 1, i + 2, i + 3, i + 4] for i in range(0, 60, 5)]
    logits = {}
    for early in (True, False):
        monkeypatch.setattr(kernels, "LAUNCH_EARLY", early)
        engine = StaticEngine(model, max_sessions=2, max_context=512)
        session = engine.new_session()
        engine.forward(session, prompt, 1)
        logits[early] = torch.stack([engine.forward(session, tokens, 5) for tokens in rounds])
    assert torch.equal(logits[True], logits[False])
