"""Prometheus metrics of both halves, named under `edgespec:` and mirroring vLLM's speculative
decoding counters (num_drafts, num_draft_tokens, num_accepted_tokens, ..._per_pos). Each half owns
its registry, so several can live in one process (tests, benchmarks)."""

from __future__ import annotations

from collections.abc import Callable

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from edgespec.edge.controller import Snapshot, Step
from edgespec.metrics.loop_metrics import LoopCounter, LoopHistogram, SpecCounters
from edgespec.metrics.stats import SpecStats

prometheus_client.disable_created_metrics()  # `_created` series double the output and nobody reads them

PREFIX = "edgespec:"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
REQUEST_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0)


class EdgeMetrics:
    """The edge's metrics; implements RuntimeObserver and LinkEvents."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.spec = SpecCounters(registry, f"{PREFIX}spec_decode_")

        def histogram(name: str, doc: str, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> Histogram:
            return Histogram(PREFIX + name, doc, buckets=buckets, registry=registry)

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(PREFIX + name, doc, labels, registry=registry)

        self.rtt_seconds = histogram("link_rtt_seconds", "Round trip to the cloud (pings; rounds less cloud time)")
        self.draft_seconds = histogram("draft_time_seconds", "Edge time drafting one block")
        self.verify_seconds = histogram("verify_time_seconds", "Cloud time verifying one block, as it reports")
        self.network_wait = counter("network_wait_seconds", "Time spent waiting on the link, cloud compute excluded")
        self.ttft = histogram("time_to_first_token_seconds", "Time to the first output token")
        self.itl = histogram("inter_token_latency_seconds", "Gap between output tokens, per token")
        self.e2e = histogram("e2e_request_latency_seconds", "Request latency", REQUEST_BUCKETS)
        self.bytes_sent = counter("link_bytes_sent", "Bytes sent to the cloud")
        self.bytes_received = counter("link_bytes_received", "Bytes received from the cloud")
        self.cloud_forwards = counter("cloud_forward_passes", "Forward passes the cloud ran for this edge")
        self.fallback = counter("fallback_tokens", "Tokens drafted alone while the cloud was away (draft policy)")
        self.reconnects = counter("link_reconnects", "Times the link to the cloud came back after a loss")
        self.link_losses = counter("link_losses", "Times the link to the cloud was lost")
        self.prompt_tokens = counter("prompt_tokens", "Prompt tokens processed", ("mode",))
        self.generation_tokens = counter("generation_tokens", "Output tokens generated", ("mode",))
        self.requests = counter("request_success", "Finished requests", ("mode", "finish_reason"))
        self.link_up_gauge = Gauge(PREFIX + "link_up", "1 while the link to the cloud is up", registry=registry)
        self.running = Gauge(PREFIX + "num_requests_running", "Requests being generated", registry=registry)
        self.cloud_up_gauge = Gauge(PREFIX + "cloud_up", "1 while this cloud is usable", ["cloud"], registry=registry)
        self.placements = counter("cloud_sessions_placed", "Sessions placed on each cloud", ("cloud",))
        self.burst_tokens = counter("cloud_burst_tokens", "Tokens the cloud decoded alone in spec mode (slow link)")
        self.lookahead_rounds = counter(
            "lookahead_rounds", "Rounds with a block drafted ahead, by outcome", ("result",)
        )
        self.controller = ControllerMetrics(registry)

    # --- RuntimeObserver
    def round(self, drafted: int, accepted: int, network_s: float, verify_s: float) -> None:
        self.spec.round(drafted, accepted)
        self.verify_seconds.observe(verify_s)
        self.rtt_seconds.observe(max(network_s - verify_s, 0.0))
        self.network_wait.inc(max(network_s - verify_s, 0.0))

    def draft_time(self, seconds: float) -> None:
        self.draft_seconds.observe(seconds)

    def first_token(self, ttft_s: float) -> None:
        self.ttft.observe(ttft_s)

    def tokens(self, count: int, gap_s: float) -> None:
        for _ in range(count):  # a chunk of n tokens after a gap g: n tokens at g/n each
            self.itl.observe(gap_s / count)

    def fallback_tokens(self, count: int) -> None:
        self.fallback.inc(count)

    def decision(self, step: Step, estimates: Snapshot) -> None:
        self.controller.decision(step, estimates)

    def lookahead(self, confirmed: bool) -> None:
        self.lookahead_rounds.labels(result="hit" if confirmed else "miss").inc()

    def request_done(self, stats: SpecStats, finish_reason: str) -> None:
        self.e2e.observe(stats.wall_s)
        self.burst_tokens.inc(stats.burst_tokens)
        self.bytes_sent.inc(stats.bytes_up)
        self.bytes_received.inc(stats.bytes_down)
        self.cloud_forwards.inc(stats.target_forwards)
        self.generation_tokens.labels(mode=stats.mode).inc(stats.output_tokens)
        self.requests.labels(mode=stats.mode, finish_reason=finish_reason).inc()

    def request_started(self, mode: str, prompt_tokens: int) -> None:
        self.prompt_tokens.labels(mode=mode).inc(prompt_tokens)

    # --- LinkEvents
    def link_up(self, reconnect: bool) -> None:
        self.link_up_gauge.set(1)
        if reconnect:
            self.reconnects.inc()

    def link_lost(self) -> None:
        self.link_up_gauge.set(0)
        self.link_losses.inc()

    def rtt(self, seconds: float) -> None:
        self.rtt_seconds.observe(seconds)

    # --- PoolEvents (several clouds)
    def cloud_up(self, address: str, up: bool) -> None:
        self.cloud_up_gauge.labels(cloud=address).set(1 if up else 0)

    def placed(self, address: str) -> None:
        self.placements.labels(cloud=address).inc()


class ControllerMetrics:
    """What `--num-speculative-tokens auto` decided, and the estimates it decided on."""

    def __init__(self, registry: CollectorRegistry) -> None:
        name = PREFIX + "spec_controller_"
        self.decisions = Counter(name + "decisions", "Choices: a draft length, or cloud", ["choice"], registry=registry)
        self.k = Gauge(name + "k", "The latest choice's draft length (0: the cloud decodes)", registry=registry)
        self.predicted = Gauge(name + "predicted_tokens_per_second", "Latest choice's prediction", registry=registry)
        self.estimate = Gauge(name + "estimate_seconds", "Moving estimates of time", ["quantity"], registry=registry)
        self.acceptance = Gauge(name + "acceptance", "Acceptance by position", ["position"], registry=registry)

    def decision(self, step: Step, estimates: Snapshot) -> None:
        self.decisions.labels(choice=step.label).inc()
        self.k.set(step.k)
        if step.predicted_tokens_per_s is not None:
            self.predicted.set(step.predicted_tokens_per_s)
        times = {"round_trip": estimates.round_trip_s, "draft_token": estimates.draft_token_s}
        for quantity, seconds in (times | {"decode_step": estimates.decode_step_s}).items():
            if seconds is not None:
                self.estimate.labels(quantity=quantity).set(seconds)
        for position, alpha in enumerate(estimates.acceptance, start=1):
            self.acceptance.labels(position=str(position)).set(alpha)


class CloudMetrics:
    def __init__(self, open_sessions: Callable[[], int], connected_edges: Callable[[], int]) -> None:
        self.registry = registry = CollectorRegistry()
        self.spec = SpecCounters(registry, f"{PREFIX}cloud_spec_decode_")
        Gauge(PREFIX + "cloud_sessions_active", "Sessions holding KV", registry=registry).set_function(open_sessions)
        Gauge(PREFIX + "cloud_edges_connected", "Authenticated edge connections", registry=registry).set_function(
            connected_edges
        )
        self.sessions = Counter(PREFIX + "cloud_sessions_opened", "Sessions opened", ["mode"], registry=registry)
        # updated for every round on the loop, between a call's results and the next call: lock-free
        self.forward = LoopHistogram(
            registry,
            PREFIX + "cloud_forward_time_seconds",
            "Time of one verify or decode step",
            "kind",
            ("verify", "decode"),
            LATENCY_BUCKETS,
        )
        self.verify_seconds, self.decode_seconds = (self.forward.labels(kind) for kind in ("verify", "decode"))
        self.decoded = LoopCounter(registry, PREFIX + "cloud_decoded_tokens", "Tokens decoded alone (cloud mode)")
        self.batch_size = Histogram(
            PREFIX + "cloud_verify_batch_size",
            "Sessions verified in one forward call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=registry,
        )
        self.errors = Counter(PREFIX + "cloud_errors", "Error frames sent, by code", ["code"], registry=registry)
        self.refused = Counter(
            PREFIX + "cloud_handshakes_refused", "Connections refused at handshake", registry=registry
        )

    def session_opened(self, cloud_decodes: bool) -> None:
        self.sessions.labels(mode="cloud" if cloud_decodes else "spec").inc()

    def verified(self, drafted: int, accepted: int, seconds: float) -> None:
        self.spec.round(drafted, accepted)
        self.verify_seconds.observe(seconds)

    def decoded_one(self, seconds: float) -> None:
        self.decoded.inc()
        self.decode_seconds.observe(seconds)

    def error(self, code: str) -> None:
        self.errors.labels(code=code).inc()
