"""What the edge runtime reports as it runs, kept apart from where it goes (Prometheus, logs)."""

from __future__ import annotations

from typing import Protocol

from edgespec.edge.controller import Snapshot, Step
from edgespec.metrics.stats import SpecStats


class RuntimeObserver(Protocol):
    def round(self, drafted: int, accepted: int, network_s: float, verify_s: float) -> None: ...
    def draft_time(self, seconds: float) -> None: ...
    def first_token(self, ttft_s: float) -> None: ...
    def tokens(self, count: int, gap_s: float) -> None: ...
    def fallback_tokens(self, count: int) -> None: ...
    def request_done(self, stats: SpecStats, finish_reason: str) -> None: ...
    def decision(self, step: Step, estimates: Snapshot) -> None: ...
    def lookahead(self, confirmed: bool) -> None: ...


class NullObserver:
    """Observes nothing: for library use without metrics."""

    def round(self, drafted: int, accepted: int, network_s: float, verify_s: float) -> None:
        pass

    def draft_time(self, seconds: float) -> None:
        pass

    def first_token(self, ttft_s: float) -> None:
        pass

    def tokens(self, count: int, gap_s: float) -> None:
        pass

    def fallback_tokens(self, count: int) -> None:
        pass

    def request_done(self, stats: SpecStats, finish_reason: str) -> None:
        pass

    def decision(self, step: Step, estimates: Snapshot) -> None:
        pass

    def lookahead(self, confirmed: bool) -> None:
        pass
