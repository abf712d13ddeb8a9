"""The llama.cpp backend on the real pair's GGUF files. Its logits depend on batch shape, so the
greedy test is precise in two parts: speculative output through a real cloud process equals a
reference that verifies with the same batch shapes (written here, independently of the cloud),
and where it departs from one-token decoding, the one-token run had a near-tie (top-1/top-2 gap
below the batch-shape noise measured on the same tokens). Several sessions in one decode call
give each session what it gets alone, up to that noise."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from edgespec.config import LinkConfig, Mode, ModelConfig, SamplingParams
from edgespec.edge.drafter import Drafter
from edgespec.edge.launch import start_edge
from edgespec.edge.request import GenerationRequest
from edgespec.engine.fetch import ensure_gguf
from edgespec.engine.registry import DEMO_DRAFT, DEMO_TARGET
from edgespec.processes import cloud_process

llama_cpp = pytest.importorskip("llama_cpp")
from edgespec.engine.base import Work  # noqa: E402
from edgespec.engine.llamacpp_engine import LlamaCppEngine, LlamaCppOptions  # noqa: E402

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

MAX_TOKENS = 40
PROMPTS = [
    "Write a Python function that returns the n-th Fibonacci number.",
    "Explain in two sentences what a hash map is.",
]


def engine(gguf: Path) -> LlamaCppEngine:
    return LlamaCppEngine(gguf, LlamaCppOptions(threads=1, kv_tokens=4096, max_sessions=8))


@pytest.fixture(scope="module")
def llamacpp_cloud() -> Iterator[int]:
    with cloud_process("demo-target", "--engine", "llamacpp", "--threads", "1") as port:
        yield port


async def speculate_through_the_cloud(port: int, prompts: list[list[int]], k: int) -> list[list[int]]:
    model = ModelConfig("demo-draft", threads=1, engine="llamacpp")
    runtime = await start_edge(model, LinkConfig(port=port))
    try:
        outputs = []
        for prompt in prompts:
            request = GenerationRequest(prompt, MAX_TOKENS, mode=Mode.SPEC, num_speculative_tokens=k, ignore_eos=True)
            outputs.append(await runtime.generate(request).collect())
        return outputs
    finally:
        await runtime.aclose()


def verify_shaped_reference(target: LlamaCppEngine, drafter: Drafter, prompt: list[int], k: int) -> list[int]:
    """Greedy speculation as the cloud computes it: each round one target call over the last
    committed token and the draft block (the first round: the whole prompt and the block)."""
    target_kv, draft_kv = target.new_session(), drafter.engine.new_session()
    committed = list(prompt)
    while len(committed) - len(prompt) < MAX_TOKENS:
        block = min(k, MAX_TOKENS - (len(committed) - len(prompt)) - 1)
        draft = drafter.propose(draft_kv, committed, block, SamplingParams(), seed=0).tokens
        logits = target.forward(target_kv, committed[len(target_kv.tokens) :] + draft, block + 1)
        choices = logits.argmax(dim=-1).tolist()
        accepted = next((i for i, token in enumerate(draft) if token != choices[i]), block)
        committed += [*draft[:accepted], choices[accepted]]
        target.truncate(target_kv, len(committed) - 1)
    target.release(target_kv)
    drafter.engine.release(draft_kv)
    return committed[len(prompt) :]


def one_token_decoding(target: LlamaCppEngine, prompt: list[int]) -> tuple[list[int], list[torch.Tensor]]:
    """Plain greedy decoding, one token per call; its tokens and the logits each was chosen from."""
    kv = target.new_session()
    logits = target.forward(kv, prompt, 1)[0]
    tokens, chosen_from = [], []
    for _ in range(MAX_TOKENS):
        tokens.append(int(logits.argmax()))
        chosen_from.append(logits)
        logits = target.forward(kv, [tokens[-1]], 1)[0]
    target.release(kv)
    return tokens, chosen_from


def batch_shape_noise(target: LlamaCppEngine, prompt: list[int], tokens: list[int]) -> float:
    """The largest logit difference between computing `tokens` one per call and all in one call."""
    one_by_one, together = target.new_session(), target.new_session()
    target.forward(one_by_one, prompt, 1)
    target.forward(together, prompt, 1)
    singles = torch.stack([target.forward(one_by_one, [token], 1)[0] for token in tokens])
    block = target.forward(together, tokens, len(tokens))
    target.release(one_by_one)
    target.release(together)
    return float((singles - block).abs().max())


def top2_gap(logits: torch.Tensor) -> float:
    top = torch.topk(logits, 2).values
    return float(top[0] - top[1])


@pytest.fixture(scope="module")
def engines() -> Iterator[tuple[LlamaCppEngine, Drafter]]:
    target, draft = engine(ensure_gguf(DEMO_TARGET)), engine(ensure_gguf(DEMO_DRAFT))
    yield target, Drafter(draft, support=64)
    target.close()
    draft.close()


@pytest.mark.parametrize("k", [2, 4])
def test_spec_output_equals_a_verify_shaped_reference_and_departs_only_at_near_ties(
    llamacpp_cloud: int, engines: tuple[LlamaCppEngine, Drafter], k: int
) -> None:
    from edgespec.engine.loading import load_tokenizer

    target, drafter = engines
    tokenizer = load_tokenizer(ensure_gguf(DEMO_TARGET))
    prompts = [tokenizer.render_chat([{"role": "user", "content": text}]) for text in PROMPTS]
    spec_outputs = asyncio.run(speculate_through_the_cloud(llamacpp_cloud, prompts, k))
    for prompt, spec in zip(prompts, spec_outputs, strict=True):
        assert spec == verify_shaped_reference(target, drafter, prompt, k)
        plain, chosen_from = one_token_decoding(target, prompt)
        first_difference = next((i for i, (a, b) in enumerate(zip(spec, plain, strict=True)) if a != b), None)
        if first_difference is not None:
            noise = batch_shape_noise(target, prompt, plain)
            assert top2_gap(chosen_from[first_difference]) < noise, f"diverged at {first_difference}, not a tie"


def test_sessions_batched_in_one_call_get_what_they_get_alone(engines: tuple[LlamaCppEngine, Drafter]) -> None:
    target, _ = engines
    contexts = [[9707, 11, 1879], [1986, 374, 264, 1273, 13], [750, 282, 2075]]
    blocks = [[25, 220, 16], [576, 3409], [1394, 1648, 8, 510]]
    alone = []
    for context, block in zip(contexts, blocks, strict=True):
        kv = target.new_session()
        target.forward(kv, context, 1)
        alone.append(target.forward(kv, block, len(block)))
        target.release(kv)
    sessions = [target.new_session() for _ in contexts]
    for kv, context in zip(sessions, contexts, strict=True):
        target.forward(kv, context, 1)
    batched = target.forward_many([Work(kv, block, len(block)) for kv, block in zip(sessions, blocks, strict=True)])
    for one, many in zip(alone, batched, strict=True):
        assert one.shape == many.shape
        assert float((one - many).abs().max()) < 1.0  # batch-shape noise, not another session's tokens
        agree = one.argmax(-1) == many.argmax(-1)
        near_ties = torch.tensor([top2_gap(row) < 1.0 for row in one])
        assert bool((agree | near_ties).all())
    for kv in sessions:
        assert len(kv.tokens) > 0
        target.release(kv)


def test_truncation_is_exact_and_sessions_are_isolated(engines: tuple[LlamaCppEngine, Drafter]) -> None:
    target, _ = engines
    kv, other = target.new_session(), target.new_session()
    target.forward(kv, [9707, 11, 1879], 1)
    first = target.forward(kv, [25, 220, 16], 3)
    target.forward(other, [1986, 374, 264], 1)  # another session's tokens in the shared cache
    target.truncate(kv, 3)
    again = target.forward(kv, [25, 220, 16], 3)
    assert torch.equal(first, again)
    target.release(kv)
    target.release(other)


def test_concurrent_sessions_batch_into_one_decode_and_depart_only_at_near_ties(
    engines: tuple[LlamaCppEngine, Drafter],
) -> None:
    from edgespec.cloud.launch import build_server
    from edgespec.config import CloudConfig
    from edgespec.engine.loading import load_tokenizer

    target, _ = engines
    tokenizer = load_tokenizer(ensure_gguf(DEMO_TARGET))
    texts = [*PROMPTS, "List three uses of a queue.", "Write a SQL query that counts rows per day."]
    prompts = [tokenizer.render_chat([{"role": "user", "content": text}]) for text in texts]

    async def main() -> tuple[list[list[int]], float, float]:
        server = build_server(CloudConfig(ModelConfig("demo-target", threads=1, engine="llamacpp"), port=0))
        _, port = await server.start()
        runtime = await start_edge(ModelConfig("demo-draft", threads=1, engine="llamacpp"), LinkConfig(port=port))
        try:
            requests = [GenerationRequest(p, MAX_TOKENS, mode=Mode.SPEC, num_speculative_tokens=3) for p in prompts]
            outputs = await asyncio.gather(*(runtime.generate(r).collect() for r in requests))
        finally:
            await runtime.aclose()
            await server.close()
        samples = {s.name: s.value for m in server.metrics.batch_size.collect() for s in m.samples}
        return (
            outputs,
            samples["edgespec:cloud_verify_batch_size_count"],
            samples["edgespec:cloud_verify_batch_size_sum"],
        )

    outputs, batches, rounds = asyncio.run(main())
    assert rounds > batches  # several sessions went through one llama_decode
    for prompt, output in zip(prompts, outputs, strict=True):
        plain, chosen_from = one_token_decoding(target, prompt)
        plain = plain[: len(output)]  # a request may stop early at EOS
        first_difference = next((i for i, (a, b) in enumerate(zip(output, plain, strict=True)) if a != b), None)
        if first_difference is not None:
            assert top2_gap(chosen_from[first_difference]) < batch_shape_noise(target, prompt, plain)
