"""The heart of the suite, part two: at temperature 0.8 and top_p 0.95, speculative sampling over
a real cloud process gives the target's own distribution. The first three tokens of thousands of
seeded requests are compared with the exact distribution computed from the target's logits, both
for synchronous rounds (k = 3) and for pipelined drafting (k = 1 over four tokens, so the third
token comes from a block drafted ahead whenever the first round's guess held).

Seeds are fixed, so the outcome is deterministic; the power checks below show the same test
rejects a distribution 5% (total variation) away from the target's, so passing means something.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from transformers import AutoModelForCausalLM, AutoTokenizer

from edgespec.config import LinkConfig, ModelConfig, SamplingParams
from edgespec.edge.launch import start_edge
from edgespec.edge.request import GenerationRequest
from edgespec.sampling.probs import logits_to_probs
from tests.conftest import TinyPair

SAMPLES = 8000  # the power check below shows 4000 is too few for the joint of two tokens
PROMPT = "The invention of the printing press"
PARAMS = SamplingParams(temperature=0.8, top_p=0.95)
SIGNIFICANCE = 1e-3
MIN_EXPECTED = 5.0  # cells expected rarer than this are pooled, as chi-square needs
CONCURRENCY = 16


def exact_distribution(model_path: Path, prompt: list[int], length: int) -> dict[tuple[int, ...], float]:
    """P(first `length` tokens) under `model` with PARAMS, by enumerating every prefix."""
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    dist: dict[tuple[int, ...], float] = {(): 1.0}
    for _ in range(length):
        prefixes = list(dist)
        with torch.no_grad():
            logits = model(torch.tensor([prompt + list(p) for p in prefixes])).logits[:, -1]
        probs = logits_to_probs(logits, PARAMS).double()
        dist = {
            (*prefix, token): dist[prefix] * float(probs[row, token])
            for row, prefix in enumerate(prefixes)
            for token in torch.nonzero(probs[row]).flatten().tolist()
        }
    return dist


def chi_square_pvalue(counts: Counter[tuple[int, ...]], expected: dict[tuple[int, ...], float]) -> float:
    total = sum(counts.values())
    common = [cell for cell, p in expected.items() if p * total >= MIN_EXPECTED]
    observed = [counts[cell] for cell in common]
    predicted = [expected[cell] * total for cell in common]
    observed.append(total - sum(observed))
    predicted.append(total - sum(predicted))
    return float(chisquare(observed, predicted).pvalue)


def marginal(dist: dict[tuple[int, ...], float], position: int) -> dict[tuple[int, ...], float]:
    out: dict[tuple[int, ...], float] = {}
    for cell, p in dist.items():
        key = (cell[position],)
        out[key] = out.get(key, 0.0) + p
    return out


@dataclass(frozen=True)
class Scheme:
    k: int
    pipeline: bool
    max_tokens: int  # the first three are tested


SCHEMES = {"sync-k3": Scheme(3, False, 3), "pipelined-k1": Scheme(1, True, 4)}


@dataclass
class Samples:
    scheme: Scheme
    tokens: list[tuple[int, ...]]  # the first three of each request
    lookahead_hits: int


async def sample_spec(port: int, draft: Path, prompt: list[int], scheme: Scheme) -> Samples:
    runtime = await start_edge(ModelConfig(str(draft)), LinkConfig(port=port))
    semaphore = asyncio.Semaphore(CONCURRENCY)
    hits = 0

    async def one(seed: int) -> tuple[int, ...]:
        nonlocal hits
        params = SamplingParams(temperature=PARAMS.temperature, top_p=PARAMS.top_p, seed=seed)
        request = GenerationRequest(
            prompt,
            scheme.max_tokens,
            params,
            num_speculative_tokens=scheme.k,
            pipeline=scheme.pipeline,
            ignore_eos=True,
        )
        async with semaphore:
            generation = runtime.generate(request)
            tokens = await generation.collect()
        hits += generation.stats.lookahead_hits
        return tuple(tokens[:3])

    try:
        return Samples(scheme, await asyncio.gather(*(one(seed) for seed in range(SAMPLES))), hits)
    finally:
        await runtime.aclose()


@pytest.fixture(scope="module")
def prompt(tiny_pair: TinyPair) -> list[int]:
    return AutoTokenizer.from_pretrained(tiny_pair.target).encode(PROMPT)


@pytest.fixture(scope="module")
def target_dist(tiny_pair: TinyPair, prompt: list[int]) -> dict[tuple[int, ...], float]:
    return exact_distribution(tiny_pair.target, prompt, 3)


@pytest.fixture(scope="module", params=list(SCHEMES))
def spec_run(request: pytest.FixtureRequest, tiny_cloud: int, tiny_pair: TinyPair, prompt: list[int]) -> Samples:
    return asyncio.run(sample_spec(tiny_cloud, tiny_pair.draft, prompt, SCHEMES[request.param]))


@pytest.fixture(scope="module")
def spec_samples(spec_run: Samples) -> list[tuple[int, ...]]:
    return spec_run.tokens


def test_blocks_drafted_ahead_are_used_exactly_when_pipelining(spec_run: Samples) -> None:
    """Without this, the pipelined run could pass by never using what it drafted ahead."""
    if spec_run.scheme.pipeline:
        assert spec_run.lookahead_hits > SAMPLES // 10
    else:
        assert spec_run.lookahead_hits == 0


def test_first_two_tokens_follow_the_target_jointly(spec_samples: list, target_dist: dict) -> None:
    pairs = Counter(sample[:2] for sample in spec_samples)
    joint = {}
    for cell, p in target_dist.items():
        joint[cell[:2]] = joint.get(cell[:2], 0.0) + p
    assert chi_square_pvalue(pairs, joint) > SIGNIFICANCE


@pytest.mark.parametrize("position", [0, 1, 2])
def test_each_of_the_first_three_tokens_follows_the_target(
    spec_samples: list, target_dist: dict, position: int
) -> None:
    counts = Counter((sample[position],) for sample in spec_samples)
    assert chi_square_pvalue(counts, marginal(target_dist, position)) > SIGNIFICANCE


def test_the_draft_really_differs_and_is_often_accepted(spec_samples: list, tiny_pair: TinyPair, prompt: list) -> None:
    """Without this, the test above could pass with a draft equal to the target."""
    draft_dist = exact_distribution(tiny_pair.draft, prompt, 1)
    target_first = exact_distribution(tiny_pair.target, prompt, 1)
    tv = 0.5 * sum(
        abs(draft_dist.get(c, 0.0) - target_first.get(c, 0.0)) for c in draft_dist.keys() | target_first.keys()
    )
    assert tv > 0.05
    assert chi_square_pvalue(Counter((s[0],) for s in spec_samples), draft_dist) < SIGNIFICANCE


def test_the_test_detects_a_five_percent_error(target_dist: dict) -> None:
    """Power: samples from a distribution 5% (TV) away from the target's are rejected nearly always."""
    joint: dict[tuple[int, ...], float] = {}
    for cell, p in target_dist.items():
        joint[cell[:2]] = joint.get(cell[:2], 0.0) + p
    cells = sorted(joint, key=joint.__getitem__, reverse=True)
    probs = np.array([joint[c] for c in cells])
    half = len(cells) // 2
    shifted = probs.copy()  # move 5% of the mass from the likely half to the unlikely half
    shifted[:half] -= 0.05 * probs[:half] / probs[:half].sum()
    shifted[half:] += 0.05 * probs[half:] / probs[half:].sum()
    rng = np.random.default_rng(0)
    rejections = 0
    for _ in range(20):
        draws = rng.multinomial(SAMPLES, shifted / shifted.sum())
        counts = Counter({cell: int(n) for cell, n in zip(cells, draws, strict=True)})
        rejections += chi_square_pvalue(counts, joint) < SIGNIFICANCE
    assert rejections >= 19


def test_exact_distribution_is_a_distribution(target_dist: dict) -> None:
    assert sum(target_dist.values()) == pytest.approx(1.0, abs=1e-6)
    assert all(len(cell) == 3 for cell in itertools.islice(target_dist, 10))
