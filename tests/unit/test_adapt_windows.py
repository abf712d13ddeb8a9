"""`bench adapt` reads auto's rate over windows of whole requests (one of each prompt), so the
prompts' different acceptance does not pass for the controller's doing."""

from __future__ import annotations

from edgespec.bench.adapt import Exchange, exchanges_to_recover, windowed_rates


def requests(rates: list[float], after_step: bool = True, first: int = 0) -> list[Exchange]:
    """One request per rate, each of four exchanges of one token at that rate."""
    return [Exchange(after_step, first + index, "4", 1, 1 / rate) for index, rate in enumerate(rates) for _ in range(4)]


def test_a_window_holds_whole_requests_one_of_each_prompt() -> None:
    exchanges = requests([9.0], after_step=False) + requests([2.0, 6.0, 2.0, 6.0], first=1)
    points = windowed_rates(exchanges, window_requests=2)
    assert [so_far for so_far, _ in points] == [8, 12, 16]  # exchanges after the step at each window's end
    assert all(abs(rate - 3.0) < 1e-9 for _, rate in points)  # 8 tokens in 4/2 + 4/6 seconds: steady


def test_recovery_is_the_first_window_near_the_best_that_stays_there() -> None:
    exchanges = requests([1.0, 1.0, 4.0, 1.0, 4.0, 4.0, 4.0, 4.0])
    assert exchanges_to_recover(exchanges, best_rate=4.0, window_requests=2) == 24  # not 12: it fell back
    assert exchanges_to_recover(exchanges, best_rate=9.0, window_requests=2) is None
