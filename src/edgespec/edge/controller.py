"""`--num-speculative-tokens auto`: choose each round's draft length, or hand the cloud the pen.

Before every round the controller predicts the output tokens per second of each choice from its
moving estimates (edge/estimates.py) and takes the best:

- a round drafting k tokens commits E[N](k) = 1 + sum_i prod_{j<=i} alpha_j tokens and takes
  k * t_draft + o + t_verify(k+1) (o: the round trip with the cloud's compute taken out); with
  pipelined drafting, a round whose block is accepted in full and whose bonus token was guessed
  (probability prod_{j<=k+1} alpha_j) costs only max(o + t_verify, (k+1) * t_draft), since the
  next block was drafted while this one was in flight;
- a decode burst lets the cloud decode n tokens on its own: n / (o + n * t_step). It wins when
  the round trip is long against the target's step; n is long enough that the burst's one round
  trip costs at most BURST_RTT_SHARE of it, so control returns to rounds once the link recovers.
  After PROBE_AFTER_BURSTS bursts in a row one round runs anyway: only rounds measure what rounds
  cost, and an estimate that is never refreshed could keep rounds out for good.

The choice keeps the current draft length (or keeps bursting) unless another choice is predicted
to be more than HYSTERESIS faster: predictions made from noisy estimates wobble around near-ties,
and with pipelined drafting every change of k costs work already drafted ahead for the old one.

One controller serves every request of an edge: the link and the model pair are shared, so what
one request measured is the next one's starting point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgespec.edge.estimates import Acceptance, Ewma, VerifyCosts

TIME_WEIGHT = 0.25  # of a new sample in the moving estimates of time: follows a change in a few rounds
BURST_RTT_SHARE = 0.05
MIN_BURST, MAX_BURST = 8, 256
PROBE_AFTER_BURSTS = 8  # then one round, so estimates only rounds refresh (verify costs) cannot go stale
HYSTERESIS = 0.03  # the predicted gain a change of choice must promise


@dataclass(frozen=True)
class Step:
    """What the next exchange with the cloud is: a round of `k` drafted tokens, or (burst > 0)
    a burst of `burst` tokens the cloud decodes on its own."""

    k: int
    burst: int = 0
    predicted_tokens_per_s: float | None = None

    @property
    def label(self) -> str:
        return "cloud" if self.burst else str(self.k)


@dataclass(frozen=True)
class Snapshot:
    """The estimates behind the latest decision, for metrics."""

    round_trip_s: float | None
    draft_token_s: float | None
    decode_step_s: float | None
    acceptance: list[float]


class SpecController:
    def __init__(self, max_k: int, start_k: int = 4) -> None:
        self.max_k = max_k
        self.start_k = min(start_k, max_k)
        self.acceptance = Acceptance()
        self.verify = VerifyCosts()
        self.round_trip = Ewma(TIME_WEIGHT)  # network time of a round minus the cloud's compute
        self.draft_token = Ewma(TIME_WEIGHT)  # one draft forward
        self.decode_step = Ewma(TIME_WEIGHT)  # the cloud's per-token time in a burst, as the edge sees it
        self._bursts_in_a_row = 0
        self._current: Step | None = None  # the latest choice, which a change must beat by HYSTERESIS

    # --- observations ---------------------------------------------------------------------------

    def observe_round(self, drafted: int, accepted: int, network_s: float, verify_s: float, prefill: bool) -> None:
        """A round's outcome and times; `prefill`: the round opened a session, so the cloud's time
        includes the prompt's prefill and says nothing of what a round costs."""
        self.acceptance.observe(drafted, accepted)
        if not prefill:
            self.verify.observe(drafted + 1, verify_s)
        self.round_trip.add(max(network_s - verify_s, 0.0))

    def observe_draft(self, forwards: int, seconds: float) -> None:
        if forwards:
            self.draft_token.add(seconds / forwards)

    def observe_burst(self, tokens: int, first_token_s: float | None, later_tokens_s: float) -> None:
        """A burst: the first token came `first_token_s` after the request (None: unknown, as
        behind an Open, whose prefill it would include), the rest over `later_tokens_s`."""
        if tokens > 1:
            self.decode_step.add(later_tokens_s / (tokens - 1))
        if first_token_s is not None:
            self.round_trip.add(max(first_token_s - self._decode_step(), 0.0))

    # --- the decision ---------------------------------------------------------------------------

    def next_step(self, remaining: int, pipeline: bool) -> Step:
        """The best step for a request that may still produce `remaining` tokens and drafts
        ahead (`pipeline`) or not."""
        longest = min(self.max_k, remaining - 1)
        if self.round_trip.value is None or self.draft_token.value is None or not self.verify.known:
            return Step(max(min(self.start_k, longest), 0))
        rounds = [Step(k, 0, self._round_rate(k, pipeline)) for k in range(1, longest + 1)]
        probing = self._bursts_in_a_row >= PROBE_AFTER_BURSTS and rounds
        options = rounds if probing else [*rounds, self._burst(remaining)]
        best = self._kept(options, max(options, key=_rate))
        self._bursts_in_a_row = self._bursts_in_a_row + 1 if best.burst else 0
        self._current = best
        return best

    def _kept(self, options: list[Step], best: Step) -> Step:
        """The current choice, if it is still on offer and within HYSTERESIS of the best."""
        current = self._current
        if current is None:
            return best
        same = (s for s in options if (s.burst > 0) == (current.burst > 0) and (s.burst or s.k == current.k))
        kept = next(same, None)
        if kept is not None and _rate(kept) >= (1 - HYSTERESIS) * _rate(best):
            return kept
        return best

    def snapshot(self) -> Snapshot:
        return Snapshot(
            self.round_trip.value, self.draft_token.value, self.decode_step.value, self.acceptance.per_position()
        )

    def _round_rate(self, k: int, pipeline: bool) -> float:
        assert self.round_trip.value is not None and self.draft_token.value is not None
        draft, in_flight = self.draft_token.value, self.round_trip.value + self.verify.cost(k + 1)
        if pipeline:
            hit = self.acceptance.all_accepted(k + 1)  # block accepted and bonus token guessed
            # a miss finds the draft mid-forward on average half a forward into wasted work
            seconds = hit * max(in_flight, (k + 1) * draft) + (1 - hit) * (in_flight + (k + 0.5) * draft)
        else:
            seconds = k * draft + in_flight
        return self.acceptance.expected_tokens(k) / seconds

    def _burst(self, remaining: int) -> Step:
        assert self.round_trip.value is not None
        step, trip = self._decode_step(), self.round_trip.value
        wanted = math.ceil(trip * (1 - BURST_RTT_SHARE) / (BURST_RTT_SHARE * step)) if step > 0 else MAX_BURST
        tokens = max(1, min(max(wanted, MIN_BURST), MAX_BURST, remaining))
        return Step(0, tokens, tokens / (trip + tokens * step))

    def _decode_step(self) -> float:
        """The cloud's time per decoded token: measured in bursts, else a one-token verify's cost."""
        return self.decode_step.value if self.decode_step.value is not None else self.verify.cost(1)


def _rate(step: Step) -> float:
    return step.predicted_tokens_per_s or 0.0
