"""Moving estimates of what a speculative round costs and yields on this link, right now.

The controller (edge/controller.py) turns them into a choice; they live apart so each can be read
and tested on its own. All times are in seconds.
"""

from __future__ import annotations

import math


class Ewma:
    """An exponentially weighted moving average; None until the first sample. The first samples
    are averaged plainly (a sample weighs at least 1/n): one cold first measurement, a forward pass
    of a shape the process had not run yet, must not stand for long."""

    def __init__(self, weight: float) -> None:
        self.weight = weight
        self.value: float | None = None
        self._count = 0

    def add(self, sample: float) -> None:
        self._count += 1
        if self.value is None:
            self.value = sample
        else:
            self.value += max(self.weight, 1 / self._count) * (sample - self.value)


class Acceptance:
    """Per-position acceptance: alpha(i) = P(drafted token i is accepted | tokens 1..i-1 were).

    Discounted counts: every round discounts all positions by DECAY, so the estimate follows a
    change of text within tens of rounds. Each position is shrunk towards the pooled acceptance of
    all positions (POOLED_WEIGHT pseudo-rounds): deep positions are tried in few rounds, and a
    position the controller has stopped drafting must drift back to the pooled value rather than
    stay stuck at an unlucky estimate that keeps it from being tried again. Positions never tried
    take the pooled value; before any round it is PRIOR."""

    PRIOR = 0.7
    PRIOR_WEIGHT = 2.0
    POOLED_WEIGHT = 4.0
    DECAY = 0.97

    def __init__(self) -> None:
        self._accepted: list[float] = []
        self._tried: list[float] = []

    def observe(self, drafted: int, accepted: int) -> None:
        """A round that drafted `drafted` tokens and had the first `accepted` accepted: positions
        1..accepted were accepted, position accepted+1 (if drafted) was tried and rejected."""
        tried = min(drafted, accepted + 1)
        while len(self._tried) < tried:
            self._accepted.append(0.0)
            self._tried.append(0.0)
        for i in range(len(self._tried)):
            self._accepted[i] *= self.DECAY
            self._tried[i] *= self.DECAY
        for i in range(tried):
            self._accepted[i] += 1.0 if i < accepted else 0.0
            self._tried[i] += 1.0

    def pooled(self) -> float:
        """The acceptance of all positions together."""
        return (sum(self._accepted) + self.PRIOR * self.PRIOR_WEIGHT) / (sum(self._tried) + self.PRIOR_WEIGHT)

    def alpha(self, position: int) -> float:
        """The acceptance of drafted position `position` (1-based)."""
        pooled = self.pooled()
        if position > len(self._tried):
            return pooled
        i = position - 1
        return (self._accepted[i] + pooled * self.POOLED_WEIGHT) / (self._tried[i] + self.POOLED_WEIGHT)

    def all_accepted(self, k: int) -> float:
        """P(all of k drafted tokens are accepted)."""
        return math.prod(self.alpha(i) for i in range(1, k + 1))

    def expected_tokens(self, k: int) -> float:
        """E[tokens a round of k commits]: the accepted prefix plus the cloud's own token."""
        expected, survive = 1.0, 1.0
        for i in range(1, k + 1):
            survive *= self.alpha(i)
            expected += survive
        return expected

    def per_position(self) -> list[float]:
        return [self.alpha(i) for i in range(1, len(self._tried) + 1)]


class VerifyCosts:
    """The cloud's time for a forward over m tokens (m = k + 1).

    Each m measured keeps a moving average; the cost of any m is read off a line a + b·m fitted to
    them, each weighing as often as it was measured (up to FIT_WEIGHT_CAP). Pooled so, one noisy
    or cold sample of a rarely tried m cannot reorder the choices, and m not tried yet get a
    value from those that were. The slope is never negative: more tokens never cost less. With one
    m measured, larger m are taken to cost the same (a verify is memory-bound on a GPU: more
    tokens cost little, so the controller tries them) and smaller m proportionally less."""

    WEIGHT = 0.2
    FIT_WEIGHT_CAP = 8

    def __init__(self) -> None:
        self._by_m: dict[int, Ewma] = {}
        self._counts: dict[int, int] = {}

    def observe(self, m: int, seconds: float) -> None:
        self._by_m.setdefault(m, Ewma(self.WEIGHT)).add(seconds)
        self._counts[m] = self._counts.get(m, 0) + 1

    @property
    def known(self) -> bool:
        return bool(self._by_m)

    def cost(self, m: int) -> float:
        if not self._by_m:
            raise ValueError("no verify cost measured yet")
        if len(self._by_m) == 1:
            ((measured, average),) = self._by_m.items()
            value = _value(average)
            return value if m >= measured else value * m / measured
        intercept, slope = self._line()
        return max(intercept + slope * m, 0.0)

    def _line(self) -> tuple[float, float]:
        """Weighted least squares over the measured m (at least two of them)."""
        points = [(m, _value(average), min(self._counts[m], self.FIT_WEIGHT_CAP)) for m, average in self._by_m.items()]
        total = sum(w for _, _, w in points)
        mean_m = sum(w * m for m, _, w in points) / total
        mean_v = sum(w * v for _, v, w in points) / total
        spread = sum(w * (m - mean_m) ** 2 for m, _, w in points)
        slope = max(sum(w * (m - mean_m) * (v - mean_v) for m, v, w in points) / spread, 0.0)
        return mean_v - slope * mean_m, slope


def _value(average: Ewma) -> float:
    assert average.value is not None
    return average.value
