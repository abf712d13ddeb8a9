"""The adaptive controller: its estimates, and its choices against a simulated link whose true
costs are known, so "best" is computed exactly rather than measured."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import pytest

from edgespec.edge.controller import BURST_RTT_SHARE, SpecController, Step
from edgespec.edge.estimates import Acceptance, VerifyCosts
from edgespec.edge.read_along import PseudoRounds

REMAINING = 10_000  # a long request: no budget limits the choice


@dataclass
class Link:
    """A simulated edge–cloud pair: per-position acceptance `alpha`, times in seconds."""

    rtt: float
    draft_token: float
    verify_base: float
    verify_per_token: float
    alpha: float = 0.85
    noise: float = 0.0  # each measured time off by up to this share, either way

    def verify(self, m: int) -> float:
        return self.verify_base + self.verify_per_token * m

    def rate(self, step: Step, pipeline: bool) -> float:
        """True tokens/s of a step, by the same model the controller uses but with true values."""
        if step.burst:
            return step.burst / (self.rtt + step.burst * self.verify(1))
        k, in_flight = step.k, self.rtt + self.verify(step.k + 1)
        expected = sum(self.alpha**i for i in range(k + 1))
        if pipeline:
            hit = self.alpha ** (k + 1)
            seconds = hit * max(in_flight, (k + 1) * self.draft_token)
            seconds += (1 - hit) * (in_flight + (k + 0.5) * self.draft_token)
        else:
            seconds = k * self.draft_token + in_flight
        return expected / seconds

    def best_rate(self, pipeline: bool, max_k: int = 8) -> float:
        rounds = [self.rate(Step(k), pipeline) for k in range(1, max_k + 1)]
        return max([*rounds, self.rate(Step(0, 256), pipeline)])

    def play(self, controller: SpecController, step: Step, rng: random.Random) -> None:
        """One exchange: what the edge would observe (in a burst, as its draft reads along)."""
        if step.burst:
            controller.observe_burst(step.burst, self.rtt + self.verify(1), (step.burst - 1) * self.verify(1))
            rounds = PseudoRounds(controller.max_k)
            for accepted in rounds.feed([rng.random() < self.alpha for _ in range(step.burst)]):
                controller.acceptance.observe(controller.max_k, accepted)
            controller.acceptance.observe(rounds.open_run(), rounds.open_run())
            return
        accepted = 0
        while accepted < step.k and rng.random() < self.alpha:
            accepted += 1
        jitter = lambda: 1 + rng.uniform(-self.noise, self.noise)  # noqa: E731
        controller.observe_draft(step.k, step.k * self.draft_token * jitter())
        verify = self.verify(step.k + 1) * jitter()
        controller.observe_round(step.k, accepted, self.rtt + verify, verify, prefill=False)


def settle(controller: SpecController, link: Link, rounds: int, pipeline: bool, seed: int = 0) -> Step:
    rng = random.Random(seed)
    for _ in range(rounds):
        link.play(controller, controller.next_step(REMAINING, pipeline), rng)
    return controller.next_step(REMAINING, pipeline)


def test_acceptance_estimates_converge_and_give_the_expected_tokens() -> None:
    acceptance = Acceptance()
    rng = random.Random(1)
    for _ in range(400):
        accepted = 0
        while accepted < 4 and rng.random() < 0.8:
            accepted += 1
        acceptance.observe(4, accepted)
    assert acceptance.per_position() == pytest.approx([0.8] * 4, abs=0.12)
    alphas = [acceptance.alpha(i) for i in range(1, 5)]
    expected = 1 + alphas[0] + alphas[0] * alphas[1] + alphas[0] * alphas[1] * alphas[2] + acceptance.all_accepted(4)
    assert acceptance.expected_tokens(4) == pytest.approx(expected)
    assert acceptance.alpha(7) == acceptance.pooled()  # deeper than tried: all positions pooled


def test_acceptance_has_a_prior_before_any_round() -> None:
    assert Acceptance().alpha(1) == Acceptance.PRIOR


def test_unmeasured_verify_costs_are_estimated_optimistically() -> None:
    costs = VerifyCosts()
    with pytest.raises(ValueError):
        costs.cost(3)
    costs.observe(5, 0.50)
    assert costs.cost(9) == pytest.approx(0.50)  # one size measured: larger ones as dear, no more
    assert costs.cost(1) == pytest.approx(0.10)  # smaller ones proportionally cheaper
    costs.observe(3, 0.30)
    assert costs.cost(4) == pytest.approx(0.40)  # two sizes: the line through them
    assert costs.cost(9) == pytest.approx(0.90)


def test_verify_costs_follow_the_line_of_all_sizes_not_one_noisy_size() -> None:
    costs = VerifyCosts()
    for m, seconds in [(3, 0.30), (5, 0.50), (7, 0.70)] * 6:
        costs.observe(m, seconds)
    costs.observe(6, 1.5)  # one cold sample of a size tried once
    assert costs.cost(6) < 0.8  # not 1.5: the other sizes' line holds it
    assert costs.cost(7) < costs.cost(8) < 1.0
    costs.observe(2, 0.9)  # a smaller size measured dearer: the slope stays non-negative
    assert costs.cost(1) <= costs.cost(2) <= costs.cost(9)


def test_guesses_read_along_a_burst_become_the_rounds_they_imply() -> None:
    rounds = PseudoRounds(k=3)
    assert rounds.feed([True, False, True, True, True]) == [1, 3]  # a miss ends a round; k matches fill one
    assert rounds.feed([False, True, False]) == [1]  # the bonus token after a full round is nobody's guess
    assert rounds.feed([True, True]) == []  # a round still open ...
    assert rounds.open_run() == 2  # ... whose matches still count when reading stops


def test_an_opening_rounds_prefill_is_not_taken_for_a_rounds_cost() -> None:
    controller = SpecController(8)
    controller.observe_round(4, 4, network_s=2.1, verify_s=2.0, prefill=True)  # a long prompt's prefill
    assert not controller.verify.known and controller.round_trip.value == pytest.approx(0.1)
    controller.observe_round(4, 4, network_s=0.7, verify_s=0.6, prefill=False)
    assert controller.verify.cost(5) == pytest.approx(0.6)


def test_the_first_round_uses_the_starting_k() -> None:
    assert SpecController(max_k=8, start_k=4).next_step(REMAINING, pipeline=True) == Step(4)
    assert SpecController(max_k=8, start_k=4).next_step(3, pipeline=True) == Step(2)


def test_with_a_nearly_free_verify_it_drafts_long_blocks() -> None:
    """A GPU cloud: verifying 9 tokens costs about what 1 does, so long blocks pay."""
    link = Link(rtt=0.005, draft_token=0.004, verify_base=0.010, verify_per_token=0.0002, alpha=0.9)
    step = settle(SpecController(8), link, 60, pipeline=False)
    assert step.burst == 0 and step.k >= 3
    assert link.rate(step, False) >= 0.95 * link.best_rate(False)


def test_over_a_slow_link_the_cloud_decodes_in_bursts_that_amortise_the_round_trip() -> None:
    link = Link(rtt=0.300, draft_token=0.020, verify_base=0.035, verify_per_token=0.005)
    step = settle(SpecController(8), link, 30, pipeline=True)
    assert step.burst > 0
    assert link.rtt / (link.rtt + step.burst * link.verify(1)) <= BURST_RTT_SHARE + 0.01
    assert link.rate(step, True) >= 0.95 * link.best_rate(True)


def test_bursts_never_outlast_the_request() -> None:
    link = Link(rtt=0.300, draft_token=0.020, verify_base=0.035, verify_per_token=0.005)
    controller = SpecController(8)
    settle(controller, link, 30, pipeline=True)
    assert controller.next_step(20, pipeline=True).burst == 20


@pytest.mark.parametrize("pipeline", [False, True])
def test_after_the_rtt_steps_up_it_is_back_near_the_best_within_50_rounds(pipeline: bool) -> None:
    """The sweep's CPU pair in numbers: the right choice differs between 10 and 100 ms of RTT."""
    link = Link(rtt=0.010, draft_token=0.115, verify_base=0.350, verify_per_token=0.030)
    controller = SpecController(8)
    settle(controller, link, 100, pipeline)
    link.rtt = 0.100
    rng = random.Random(2)
    rounds_to_recover = None
    for played in range(1, 81):
        step = controller.next_step(REMAINING, pipeline)
        near_best = link.rate(step, pipeline) >= 0.95 * link.best_rate(pipeline)
        rounds_to_recover = (rounds_to_recover or played) if near_best else None
        link.play(controller, step, rng)
    assert rounds_to_recover is not None and rounds_to_recover <= 50


def test_pipelining_is_chosen_for_in_the_model_only_when_it_can_hide_drafting() -> None:
    """Drafting hidden behind the round trip makes a pipelined round cheaper, never dearer,
    whenever the guess is likely."""
    link = Link(rtt=0.200, draft_token=0.050, verify_base=0.100, verify_per_token=0.010, alpha=0.95)
    for k in range(1, 9):
        assert link.rate(Step(k), True) >= link.rate(Step(k), False) * 0.99


def test_near_a_tie_the_draft_length_does_not_flip_from_round_to_round() -> None:
    """k = 4..6 within a few percent of each other and measured times off by up to 20%: the
    choice must not follow the noise from round to round (with pipelining each change wastes the
    block drafted ahead). Without the hysteresis: about 13 changes in 150 rounds per run."""
    link = Link(rtt=0.0, draft_token=0.15, verify_base=0.75, verify_per_token=0.01, noise=0.2)
    changes, shares = 0, []
    for seed in range(5):
        controller, rng = SpecController(max_k=8), random.Random(seed)
        chosen = []
        for _ in range(200):
            step = controller.next_step(REMAINING, pipeline=True)
            chosen.append(step.k)
            link.play(controller, step, rng)
        changes += sum(a != b for a, b in itertools.pairwise(chosen[50:]))
        shares.append(sum(link.rate(Step(k), True) for k in chosen[50:]) / 150 / link.best_rate(True))
    assert changes <= 10  # over all five runs
    assert min(shares) >= 0.95
