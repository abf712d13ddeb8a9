"""The lock-free metrics read by a Prometheus scraper as prometheus_client's own would be."""

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edgespec.metrics.loop_metrics import LoopCounter, LoopHistogram, SpecCounters
from edgespec.metrics.prometheus import CloudMetrics

BOUNDS = (0.001, 0.01, 0.1)
OBSERVED = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.5, 2.0)  # on bounds too: a bound's bucket holds it (le)


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_loop_histogram_scrapes_as_prometheus_clients_own() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    histogram = LoopHistogram(ours, "t_seconds", "time", "kind", ("verify", "decode"), BOUNDS)
    reference = Histogram("t_seconds", "time", ["kind"], buckets=BOUNDS, registry=theirs)
    for value in OBSERVED:
        histogram.labels("verify").observe(value)
        reference.labels(kind="verify").observe(value)
    reference.labels(kind="decode")  # a child bound but never observed, as ours has
    assert samples(ours) == samples(theirs)


def test_spec_counters_count_rounds_and_accepted_positions() -> None:
    registry = CollectorRegistry()
    counters = SpecCounters(registry, "x_")
    counters.round(drafted=4, accepted=2)
    counters.round(drafted=4, accepted=4)
    counters.round(drafted=3, accepted=0)
    got = samples(registry)
    assert got[("x_num_drafts_total", ())] == 3
    assert got[("x_num_draft_tokens_total", ())] == 11
    assert got[("x_num_accepted_tokens_total", ())] == 6
    per_pos = [got[("x_num_accepted_tokens_per_pos_total", (("position", str(p)),))] for p in range(4)]
    assert per_pos == [2, 2, 1, 1]


def test_the_clouds_round_metrics_reach_the_scrape() -> None:
    metrics = CloudMetrics(lambda: 1, lambda: 1)
    metrics.verified(drafted=4, accepted=3, seconds=0.009)
    metrics.decoded_one(0.004)
    LoopCounter(metrics.registry, "edgespec:probe", "a counter of its own").inc(2)
    got = samples(metrics.registry)
    assert got[("edgespec:cloud_spec_decode_num_accepted_tokens_total", ())] == 3
    assert got[("edgespec:cloud_decoded_tokens_total", ())] == 1
    assert got[("edgespec:cloud_forward_time_seconds_count", (("kind", "verify"),))] == 1
    assert got[("edgespec:cloud_forward_time_seconds_bucket", (("kind", "decode"), ("le", "0.005")))] == 1
    assert got[("edgespec:cloud_forward_time_seconds_bucket", (("kind", "decode"), ("le", "0.0025")))] == 0
    assert got[("edgespec:probe_total", ())] == 2
