"""`edgespec bench adapt`: the adaptive controller through a step in RTT, on real processes.

An edge decodes with `--num-speculative-tokens auto` over an emulated link of one RTT; after a
number of exchanges (rounds or cloud bursts) the link's RTT steps to another value mid-request.
Every exchange is timed. Then, at the new RTT, each fixed draft length (pipelined) and cloud
decoding run the same prompts, as the reference: how many exchanges after the step does auto's
rate come back within 5% of the best of them? Auto's rate is read over windows of whole requests,
one of each prompt: the prompts' acceptance differs more than the controller's choices do, so a
window of a few exchanges measures which prompt is running, not how well auto chose.

Rates are steady-state: a request's first exchange (which carries the prompt's prefill) is left
out, for auto and the references alike.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from edgespec.bench.sweep import CLOUD_CORE, DEFAULT_PROMPTS, EDGE_CORE
from edgespec.config import AUTO, EdgePolicy, LinkConfig, LinkEmulation, Mode, ModelConfig
from edgespec.edge.controller import Snapshot, Step
from edgespec.edge.request import GenerationRequest
from edgespec.edge.runtime import EdgeRuntime
from edgespec.engine.fetch import resolve_model_path
from edgespec.engine.loading import load_engine
from edgespec.metrics.observer import NullObserver
from edgespec.processes import cloud_process
from edgespec.transport.resilient import ResilientLink

NEAR_BEST = 0.95


@dataclass(frozen=True)
class AdaptPlan:
    rtt_before_ms: float = 10.0
    rtt_after_ms: float = 100.0
    exchanges_before: int = 40
    exchanges_after: int = 100
    reference_ks: tuple[int, ...] = (2, 3, 4, 6, 8)
    max_tokens: int = 48
    prompts: tuple[str, ...] = DEFAULT_PROMPTS
    draft: str = "demo-draft"
    target: str = "demo-target"
    pin: bool = True


@dataclass(frozen=True)
class Exchange:
    """One round or burst of auto: what it chose, what it committed, how long it took."""

    after_step: bool
    request: int  # which request of the run it belongs to (they cycle through the prompts)
    choice: str  # a draft length, or "cloud"
    tokens: int
    seconds: float


@dataclass
class ExchangeLog(NullObserver):
    """Observes auto's decisions; the bench adds each exchange's tokens as chunks arrive."""

    choices: list[tuple[float, Step]] = field(default_factory=list)

    def decision(self, step: Step, estimates: Snapshot) -> None:
        self.choices.append((time.perf_counter(), step))


async def run_adapt(plan: AdaptPlan) -> tuple[list[Exchange], dict[str, float]]:
    """Auto's exchanges around the step, and the reference rates at the new RTT (label → tok/s)."""
    target_path, draft_path = resolve_model_path(plan.target), resolve_model_path(plan.draft)
    cloud_args = ["--threads", "1"] + (["--cpus", str(CLOUD_CORE)] if plan.pin else [])
    with contextlib.ExitStack() as stack:
        scratch = stack.enter_context(tempfile.TemporaryDirectory())
        port = stack.enter_context(cloud_process(target_path, *cloud_args, log=Path(scratch) / "cloud.log"))
        stack.callback(torch.set_num_threads, torch.get_num_threads())
        if plan.pin:
            stack.callback(os.sched_setaffinity, 0, os.sched_getaffinity(0))
            os.sched_setaffinity(0, {EDGE_CORE})
        engine, tokenizer = load_engine(draft_path, ModelConfig(str(draft_path), threads=1))
        stack.callback(engine.close)
        emulation = LinkEmulation(rtt_ms=plan.rtt_before_ms, retunable=True)
        links = ResilientLink(LinkConfig(port=port, emulation=emulation), tokenizer.identity)
        await links.start(require=True)
        log = ExchangeLog()
        runtime = EdgeRuntime(engine, tokenizer, links, EdgePolicy(), observer=log, owns_engine=False)
        try:
            prompts = [runtime.render_chat([{"role": "user", "content": text}]) for text in plan.prompts]
            exchanges = await _auto_through_the_step(runtime, log, prompts, plan)
            return exchanges, await _references(runtime, prompts, plan)
        finally:
            await runtime.aclose()


async def _auto_through_the_step(
    runtime: EdgeRuntime, log: ExchangeLog, prompts: list[list[int]], plan: AdaptPlan
) -> list[Exchange]:
    exchanges: list[Exchange] = []
    stepped = False
    request = 0
    while len([e for e in exchanges if e.after_step]) < plan.exchanges_after:
        prompt = prompts[request % len(prompts)]
        request += 1
        marks = await _timed(runtime, _request(prompt, plan, num_speculative_tokens=AUTO))
        exchanges += _exchanges(log.choices, marks, stepped, request)
        log.choices.clear()
        if not stepped and len(exchanges) >= plan.exchanges_before:
            link = runtime.links.pick() if runtime.links is not None else None
            assert link is not None, "the cloud link is down"
            link.retune(LinkEmulation(rtt_ms=plan.rtt_after_ms))
            stepped = True
    return exchanges


def _request(prompt: list[int], plan: AdaptPlan, **knobs: Any) -> GenerationRequest:
    """EOS ignored, so every request has the same length."""
    return GenerationRequest(prompt, plan.max_tokens, ignore_eos=True, **knobs)


async def _timed(runtime: EdgeRuntime, request: GenerationRequest) -> list[tuple[float, int]]:
    """(arrival time, tokens) of each chunk of one request."""
    return [(time.perf_counter(), len(chunk.tokens)) async for chunk in runtime.generate(request)]


def _exchanges(
    choices: list[tuple[float, Step]], marks: list[tuple[float, int]], after_step: bool, request: int
) -> list[Exchange]:
    """Each decision opens an exchange that lasts until the next one; its tokens are the chunks
    that arrived meanwhile. The request's first chunk (after the prompt's prefill) is left out,
    as in the references, so each exchange is timed from the chunk before its own first chunk."""
    first_at = marks[0][0]
    ends = [at for at, _ in choices[1:]] + [marks[-1][0]]
    exchanges, previous = [], first_at
    for (start, step), end in zip(choices, ends, strict=True):
        arrived = [(at, count) for at, count in marks if start < at <= end and at > first_at]
        if arrived:
            tokens, seconds = sum(c for _, c in arrived), arrived[-1][0] - previous
            exchanges.append(Exchange(after_step, request, step.label, tokens, seconds))
            previous = arrived[-1][0]
    return exchanges


async def _references(runtime: EdgeRuntime, prompts: list[list[int]], plan: AdaptPlan) -> dict[str, float]:
    """Steady-state tokens/s at the new RTT of each fixed k (pipelined) and of cloud decoding."""
    variants: dict[str, dict[str, Any]] = {f"k={k}": {"num_speculative_tokens": k} for k in plan.reference_ks}
    variants["cloud"] = {"mode": Mode.CLOUD}
    rates = {}
    for label, knobs in variants.items():
        tokens, seconds = 0, 0.0
        for prompt in prompts:
            marks = await _timed(runtime, _request(prompt, plan, **knobs))
            tokens += sum(count for _, count in marks[1:])
            seconds += marks[-1][0] - marks[0][0]
        rates[label] = tokens / seconds
    return rates


def windowed_rates(exchanges: list[Exchange], window_requests: int) -> list[tuple[int, float]]:
    """At the end of each request after the step: (exchanges after the step so far, tokens/s over
    the last `window_requests` whole requests)."""
    after = [e for e in exchanges if e.after_step]
    requests = sorted({e.request for e in after})
    points = []
    for end in range(window_requests, len(requests) + 1):
        inside = set(requests[end - window_requests : end])
        window = [e for e in after if e.request in inside]
        so_far = sum(e.request <= requests[end - 1] for e in after)
        points.append((so_far, sum(e.tokens for e in window) / sum(e.seconds for e in window)))
    return points


def exchanges_to_recover(exchanges: list[Exchange], best_rate: float, window_requests: int) -> int | None:
    """Exchanges after the step until the windowed rate is within 5% of the best reference and
    stays there (counted to the end of the first such window); None if it never is."""
    recovered = None
    for so_far, rate in windowed_rates(exchanges, window_requests):
        recovered = (recovered if recovered is not None else so_far) if rate >= NEAR_BEST * best_rate else None
    return recovered
