"""Pure sampling functions: processing, sparse quantized drafts, greedy and stochastic verification."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.stats import chisquare

from edgespec.config import SamplingParams
from edgespec.protocol.messages import SparseDist
from edgespec.sampling import sparse
from edgespec.sampling.probs import logits_to_probs, rows_to_probs
from edgespec.sampling.rng import Stream, uniform
from edgespec.sampling.verify import SampledRound, decide_sampled, sample_dense, verify_greedy

LOGITS = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]])


def test_temperature_softens_and_sharpens() -> None:
    hot = logits_to_probs(LOGITS, SamplingParams(temperature=2.0))
    cold = logits_to_probs(LOGITS, SamplingParams(temperature=0.5))
    exact = torch.softmax(LOGITS / 2.0, dim=-1)
    assert torch.allclose(hot, exact)
    assert cold[0, 0] > hot[0, 0]


def test_top_k_keeps_exactly_k_tokens() -> None:
    probs = logits_to_probs(LOGITS, SamplingParams(temperature=1.0, top_k=2))
    assert torch.count_nonzero(probs).item() == 2
    assert torch.allclose(probs[0, :2], torch.softmax(LOGITS[0, :2], dim=-1))


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    full = torch.softmax(LOGITS, dim=-1)[0]
    mass_of_two = float(full[:2].sum())
    probs = logits_to_probs(LOGITS, SamplingParams(temperature=1.0, top_p=mass_of_two - 0.01))
    assert torch.count_nonzero(probs).item() == 2
    probs = logits_to_probs(LOGITS, SamplingParams(temperature=1.0, top_p=mass_of_two + 0.01))
    assert torch.count_nonzero(probs).item() == 3


def _top_p_by_full_sort(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """The textbook top-p: sort the whole row, keep tokens while the mass before them is < p."""
    if top_p >= 1.0:
        return torch.softmax(logits, dim=-1)  # every token, however the mass rounds
    ordered, order = torch.sort(logits, descending=True)
    probs = torch.softmax(ordered, dim=-1)
    dropped = torch.cumsum(probs, dim=-1) - probs >= top_p
    return torch.softmax(logits.masked_fill(dropped.scatter(-1, order, dropped), float("-inf")), dim=-1)


@pytest.mark.parametrize("spread", [8.0, 0.1])  # sets within 16 candidates; sets past them (a full sort)
def test_top_p_among_candidates_keeps_what_a_full_sort_keeps(spread: float, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("edgespec.sampling.probs.TOP_P_CANDIDATES", 16)
    torch.manual_seed(5)
    logits = torch.randn(6, 200) * spread
    params = [SamplingParams(temperature=1.0, top_p=p) for p in (0.5, 0.9, 0.95, 0.99, 1.0, 0.3)]
    got = rows_to_probs(logits, params)
    for row, p in enumerate(params):
        wanted = _top_p_by_full_sort(logits[row : row + 1], p.top_p)[0]
        assert torch.equal(got[row] > 0, wanted > 0)
        assert torch.allclose(got[row], wanted)
    if spread > 1:
        assert int((got[:4] > 0).sum(dim=-1).max()) < 16  # the candidates held every set


def test_top_p_keeps_every_token_tied_with_the_least_likely_kept() -> None:
    logits = torch.tensor([[3.0, 1.0, 1.0, 1.0, -2.0]])
    full = torch.softmax(logits, dim=-1)[0]
    probs = logits_to_probs(logits, SamplingParams(temperature=1.0, top_p=float(full[:2].sum()) - 0.01))
    assert torch.count_nonzero(probs).item() == 4  # not one of the three equals, arbitrarily


def test_sampling_params_refuse_bad_values() -> None:
    for bad in ({"temperature": -1.0}, {"top_p": 0.0}, {"top_p": 1.5}, {"top_k": 0}, {"seed": -1}):
        with pytest.raises(ValueError):
            SamplingParams(**bad)  # type: ignore[arg-type]


def test_quantized_draft_keeps_the_top_tokens_with_integer_weights() -> None:
    probs = torch.softmax(LOGITS[0], dim=-1)
    dist = sparse.quantize(probs, support=3)
    assert dist.ids == [0, 1, 2]
    assert dist.weights[0] == sparse.WEIGHT_SCALE
    assert sparse.probability(dist, 1) == pytest.approx(float(probs[1] / probs[:3].sum()), rel=1e-4)
    assert sparse.probability(dist, 5) == 0.0


def test_sparse_sampling_draws_exactly_q() -> None:
    dist = SparseDist(ids=[7, 3, 9], weights=[5, 3, 2])
    grid = [(i + 0.5) / 1000 for i in range(1000)]
    counts = Counter(sparse.sample(dist, u) for u in grid)
    assert counts == {7: 500, 3: 300, 9: 200}


def test_dense_sampling_never_picks_a_zero_probability_token() -> None:
    probs = torch.tensor([0.0, 0.5, 0.0, 0.5, 0.0])
    assert {sample_dense(probs, u) for u in (0.0, 0.25, 0.4999, 0.5, 0.9999999)} == {1, 3}


def test_uniforms_are_reproducible_and_independent_across_streams() -> None:
    assert uniform(5, Stream.ACCEPT, 10) == uniform(5, Stream.ACCEPT, 10)
    assert uniform(5, Stream.ACCEPT, 10) != uniform(5, Stream.TARGET, 10)
    assert uniform(5, Stream.ACCEPT, 10) != uniform(6, Stream.ACCEPT, 10)


def test_uniforms_are_uniform_and_uncorrelated_between_neighbours() -> None:
    """Lossless sampling rests on these draws: across positions they must be U[0, 1) and
    neighbouring positions and streams must not move together."""
    draws = np.array([uniform(11, Stream.TARGET, position) for position in range(20_000)])
    assert stats.kstest(draws, "uniform").pvalue > 1e-3
    assert abs(np.corrcoef(draws[:-1], draws[1:])[0, 1]) < 0.03
    accept = np.array([uniform(11, Stream.ACCEPT, position) for position in range(20_000)])
    assert abs(np.corrcoef(draws, accept)[0, 1]) < 0.03


def test_greedy_verification_accepts_the_matching_prefix() -> None:
    target = torch.full((4, 10), -1.0)
    for row, token in enumerate([4, 2, 7, 1]):
        target[row, token] = 1.0
    assert verify_greedy(target, [4, 2, 7]) == (3, 1)  # all accepted, bonus token
    assert verify_greedy(target, [4, 5, 7]) == (1, 2)  # first mismatch replaced by the argmax
    assert verify_greedy(target[:1], []) == (0, 4)


def test_rejection_sampling_outputs_the_target_distribution() -> None:
    """One drafted position from a q that is sparse and unlike p; the output must follow p. The
    rounds are decided 500 at a time, as a batch of sessions is."""
    p = torch.tensor([[0.1, 0.4, 0.2, 0.3, 0.0], [0.2, 0.2, 0.2, 0.2, 0.2]])
    q = SparseDist(ids=[0, 4, 2], weights=[6, 3, 1])  # covers p's zero, misses 1 and 3
    n, batch = 20000, 500
    counts: Counter[int] = Counter()
    for first in range(0, n, batch):
        drafted = [sparse.sample(q, uniform(1, Stream.DRAFT, i)) for i in range(first, first + batch)]
        rounds = [
            SampledRound([token], [q], [uniform(1, Stream.ACCEPT, i)], [uniform(1, Stream.TARGET, i)] * 2)
            for i, token in zip(range(first, first + batch), drafted, strict=True)
        ]
        for token, (accepted, chosen) in zip(drafted, decide_sampled(p.repeat(batch, 1), rounds), strict=True):
            counts[token if accepted else chosen] += 1
    observed = [counts[t] for t in (0, 1, 2, 3)]
    assert counts[4] == 0
    expected = [n * float(x) for x in p[0, :4].double() / p[0, :4].double().sum()]
    assert chisquare(observed, expected).pvalue > 1e-3


def test_a_batch_of_rounds_is_decided_as_each_alone() -> None:
    """Rounds of different lengths (a decode step among them), decided together or one by one."""
    torch.manual_seed(4)
    q = SparseDist(ids=[0, 2, 5], weights=[5, 4, 1])
    lengths = [0, 1, 3, 2, 3]
    rounds = [
        SampledRound([2] * k, [q] * k, [uniform(9, Stream.ACCEPT, 10 * n + i) for i in range(k)],
                     [uniform(9, Stream.TARGET, 10 * n + i) for i in range(k + 1)])
        for n, k in enumerate(lengths)
    ]  # fmt: skip
    probs = [torch.softmax(torch.randn(k + 1, 6), dim=-1) for k in lengths]
    together = decide_sampled(torch.cat(probs), rounds)
    assert together == [decide_sampled(p, [r])[0] for p, r in zip(probs, rounds, strict=True)]
    assert {accepted for accepted, _ in together} != {0}  # some drafted tokens were accepted


def test_rows_with_their_own_params_are_processed_as_alone() -> None:
    logits = torch.randn(4, 50)
    params = [
        SamplingParams(temperature=0.7),
        SamplingParams(temperature=1.0, top_k=3),
        SamplingParams(temperature=1.3, top_p=0.5),
        SamplingParams(temperature=0.9, top_k=10, top_p=0.9),
    ]
    together = rows_to_probs(logits, params)
    for row, (alone_logits, alone_params) in enumerate(zip(logits, params, strict=True)):
        assert torch.equal(together[row], logits_to_probs(alone_logits[None], alone_params)[0])
