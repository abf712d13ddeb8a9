"""Moving estimates of what a speculative round costs and yields on this link, right now.

The controller (edge/controller.py) turns them into a choice; they live apart so each can be read
and tested on its own. All times are in seconds.
"""

from __future__ import annotations

import bisect
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
    """The cloud's time for a forward over m tokens (m = k + 1), by m.

    m values not measured yet are estimated optimistically, so the controller tries them once
    rather than never: between two measured values, linearly; above the largest, that value (a
    verify pass is memory-bound on a GPU: more tokens cost little); below the smallest,
    proportionally to m (as if compute-bound)."""

    WEIGHT = 0.2

    def __init__(self) -> None:
        self._by_m: dict[int, Ewma] = {}

    def observe(self, m: int, seconds: float) -> None:
        self._by_m.setdefault(m, Ewma(self.WEIGHT)).add(seconds)

    @property
    def known(self) -> bool:
        return bool(self._by_m)

    def cost(self, m: int) -> float:
        if not self._by_m:
            raise ValueError("no verify cost measured yet")
        ms = sorted(self._by_m)
        values = [self._value(x) for x in ms]
        at = bisect.bisect_left(ms, m)
        if at < len(ms) and ms[at] == m:
            return values[at]
        if at == 0:
            return values[0] * m / ms[0]
        if at == len(ms):
            return values[-1]
        left, right = ms[at - 1], ms[at]
        share = (m - left) / (right - left)
        return values[at - 1] + share * (values[at] - values[at - 1])

    def _value(self, m: int) -> float:
        value = self._by_m[m].value
        assert value is not None
        return value
