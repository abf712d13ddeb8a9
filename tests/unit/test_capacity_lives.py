"""`bench capacity` measures a steady state: each edge's first session starts part-way through its
life, so contexts of every length are served and sessions re-open out of step from the start."""

import itertools
import statistics

from edgespec.bench.capacity import lives

PROMPT = [7] * 20


def test_a_first_life_carries_what_it_lived_in_its_prompt_and_the_rest_as_budget() -> None:
    for _ in range(200):
        (first_prompt, first_budget), *whole = itertools.islice(lives(PROMPT, 100, 4), 4)
        lived = len(first_prompt) - len(PROMPT)
        assert first_prompt[: len(PROMPT)] == PROMPT and lived + first_budget == 100
        assert first_budget >= 4 + 1  # a first block of k drafted tokens and the target's still fits
        assert whole == [(PROMPT, 100)] * 3


def test_first_lives_are_spread_over_the_whole_life() -> None:
    lived = [len(next(lives(PROMPT, 100, 4))[0]) - len(PROMPT) for _ in range(4000)]
    assert min(lived) == 0 and max(lived) == 94
    assert abs(statistics.mean(lived) - 47) < 2  # uniform over 0..94
