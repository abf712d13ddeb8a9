"""Metrics updated on the event loop's hot path: plain numbers, added to without a lock and turned
into Prometheus families only when scraped.

prometheus_client's counters and histograms take a lock on every update (about a microsecond
each). A speculative round updates five of them, and on the cloud all 32 rounds of a batch are
updated between one forward call's results and the next call, while the GPU waits. One thread
(the loop) updates these; a scrape from another thread reads whole numbers, at worst one round
stale."""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric


class LoopCounter:
    """An unlabelled counter."""

    def __init__(self, registry: CollectorRegistry, name: str, documentation: str) -> None:
        self.name, self.documentation = name, documentation
        self.value = 0.0
        registry.register(self)

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, value=self.value)


class Buckets:
    """One histogram's counts: per bucket (not cumulative, so an observation touches one) and the sum."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1  # a value on a bound counts in it (le)
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        total = 0
        rows: list[tuple[str, float]] = []
        for bound, count in zip([*map(str, self.bounds), "+Inf"], list(self.counts), strict=True):
            total += count
            rows.append((bound, total))
        return rows


class LoopHistogram:
    """A histogram with one label, its values known up front (each child bound once)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        name: str,
        documentation: str,
        label: str,
        values: Sequence[str],
        bounds: Sequence[float],
    ) -> None:
        self.name, self.documentation, self.label = name, documentation, label
        self.children = {value: Buckets(bounds) for value in values}
        registry.register(self)

    def labels(self, value: str) -> Buckets:
        return self.children[value]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, child in self.children.items():
            family.add_metric([value], child.cumulative(), child.sum)
        yield family


class SpecCounters:
    """vLLM's speculative decoding counters (num_drafts, num_draft_tokens, num_accepted_tokens,
    num_accepted_tokens_per_pos), shared by the edge (per request) and the cloud (per round)."""

    def __init__(self, registry: CollectorRegistry, name: str) -> None:
        self.name = name  # the families' common start, e.g. "edgespec:cloud_spec_decode_"
        self.drafts = 0
        self.draft_tokens = 0
        self.accepted_tokens = 0
        self.accepted_per_pos: list[int] = []
        registry.register(self)

    def round(self, drafted: int, accepted: int) -> None:
        self.drafts += 1
        self.draft_tokens += drafted
        self.accepted_tokens += accepted
        per_pos = self.accepted_per_pos
        if len(per_pos) < accepted:
            per_pos += [0] * (accepted - len(per_pos))
        for position in range(accepted):
            per_pos[position] += 1

    def collect(self) -> Iterator[Metric]:
        name = self.name
        yield CounterMetricFamily(f"{name}num_drafts", "Draft blocks verified", value=self.drafts)
        yield CounterMetricFamily(
            f"{name}num_draft_tokens", "Drafted tokens sent for verification", value=self.draft_tokens
        )
        yield CounterMetricFamily(f"{name}num_accepted_tokens", "Drafted tokens accepted", value=self.accepted_tokens)
        per_pos = CounterMetricFamily(
            f"{name}num_accepted_tokens_per_pos", "Accepted drafted tokens by position", labels=["position"]
        )
        for position, count in enumerate(list(self.accepted_per_pos)):
            per_pos.add_metric([str(position)], count)
        yield per_pos
