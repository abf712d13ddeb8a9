"""The analytical model of synchronous edge–cloud speculation, the field's standard one
(Leviathan et al. 2023): a round drafts k tokens on the edge, crosses the link once, verifies k+1
tokens in one forward pass in the cloud and commits E[N] tokens, with

    E[N] = (1 − α^(k+1)) / (1 − α)          (α: probability that a drafted token is accepted)
    spec tokens/s  = E[N] / (k·t_draft + RTT + t_verify(k))
    cloud tokens/s = 1 / t_decode            (the cloud streams; the RTT delays the first token only)

Speculation beats cloud decoding while RTT < E[N]·t_decode − k·t_draft − t_verify(k): the crossover.
"""

from __future__ import annotations

from dataclasses import dataclass

_BISECTION_STEPS = 60


def expected_tokens_per_round(alpha: float, k: int) -> float:
    """E[N]: tokens one round commits, the cloud's own token included."""
    if alpha >= 1.0:
        return k + 1.0
    return (1.0 - alpha ** (k + 1)) / (1.0 - alpha)


def alpha_from_mean_length(mean_length: float, k: int) -> float:
    """The per-token acceptance α whose E[N] equals a measured mean acceptance length."""
    if mean_length >= k + 1:
        return 1.0
    low, high = 0.0, 1.0
    for _ in range(_BISECTION_STEPS):  # E[N] grows with α: bisect
        middle = (low + high) / 2
        low, high = (middle, high) if expected_tokens_per_round(middle, k) < mean_length else (low, middle)
    return (low + high) / 2


@dataclass(frozen=True)
class SpecTiming:
    """What one speculative round costs, measured for one draft length k."""

    k: int
    alpha: float
    draft_s: float  # edge time drafting one block: k·t_draft, catching up on the cloud's token included
    verify_s: float  # cloud time per verify pass of k+1 tokens
    overhead_s: float  # the rest of a round on a link with no added delay: protocol, scheduling

    def round_s(self, rtt_s: float) -> float:
        return self.draft_s + rtt_s + self.overhead_s + self.verify_s

    def tokens_per_s(self, rtt_s: float) -> float:
        return expected_tokens_per_round(self.alpha, self.k) / self.round_s(rtt_s)

    def crossover_rtt_s(self, decode_s: float) -> float:
        """The RTT above which cloud decoding (decode_s per token) is faster; negative: always."""
        return expected_tokens_per_round(self.alpha, self.k) * decode_s - self.round_s(0.0)


def cloud_tokens_per_s(decode_s: float) -> float:
    return 1.0 / decode_s


def crossover_rtt_s(timings: list[SpecTiming], decode_s: float) -> float:
    """Above this RTT no draft length beats cloud decoding."""
    return max(timing.crossover_rtt_s(decode_s) for timing in timings)
