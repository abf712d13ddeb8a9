"""`edgespec bench sweep`: every mode × draft length × drafting scheme × emulated RTT, measured on
real processes. Drafting schemes: synchronous rounds, pipelined drafting, and `auto` (the adaptive
controller choosing k, or cloud bursts, round by round, with pipelining).

The cloud runs as its own process (holding the draft too, for the co-located baseline); the edge
runs here, through the same runtime the API serves, over a link with emulated RTT (the link's
other settings are fixed for the whole sweep). With `pin`, cloud and edge get one core each and
one thread each, so neither steals the other's compute. Output is greedy and deterministic, so
every cell of a mode decodes the same tokens and cells differ only in time.
"""

from __future__ import annotations

import contextlib
import enum
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from edgespec.config import AUTO, EdgePolicy, LinkConfig, LinkEmulation, Mode, ModelConfig
from edgespec.edge.controller import SpecController
from edgespec.edge.request import GenerationRequest
from edgespec.edge.runtime import EdgeRuntime
from edgespec.engine.fetch import resolve_model_path
from edgespec.engine.loading import load_engine
from edgespec.metrics.stats import SpecStats
from edgespec.processes import cloud_process
from edgespec.transport.resilient import ResilientLink

BUILT_IN_PROMPTS = (  # `bench sweep --prompts N` takes the first N
    "Write a Python function that checks whether a number is prime.",
    "Write a Python function that returns the n-th Fibonacci number iteratively.",
    "Write a Python function that reverses the words of a sentence.",
    "Write a Python function that merges two sorted lists into one sorted list.",
    "Write a Python function that counts how often each word occurs in a text.",
    "Write a Python function that checks whether a string is a palindrome.",
    "Write a Python function that flattens a nested list.",
    "Write a Python function that computes the greatest common divisor of two numbers.",
)
DEFAULT_PROMPTS = BUILT_IN_PROMPTS[:2]  # what the published sweeps and `bench adapt` use
EDGE_CORE, CLOUD_CORE = 0, 1
WARM_UP_TOKENS = 4
SPECULATING = (Mode.SPEC, Mode.COLOCATED)


class Drafting(enum.Enum):
    SYNC = "sync"  # draft, send, wait for the verdict
    PIPELINED = "pipelined"  # keep drafting while the block is in flight
    AUTO = "auto"  # the controller picks k (or cloud bursts) each round; pipelined


CellKey = tuple[float, Mode, int, Drafting]


@dataclass(frozen=True)
class SweepPlan:
    rtts_ms: list[float]
    ks: list[int]
    modes: list[Mode]
    max_tokens: int = 48
    prompts: tuple[str, ...] = DEFAULT_PROMPTS
    draft: str = "demo-draft"
    target: str = "demo-target"
    link: LinkEmulation = field(default_factory=LinkEmulation)  # jitter, bandwidth, loss; RTT varies
    pin: bool = True
    drafting: list[Drafting] = field(default_factory=lambda: [Drafting.SYNC])  # for spec mode

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepPlan:
        """A plan as the results JSON records it."""
        drafting = [Drafting(d) for d in data.get("drafting", [Drafting.SYNC.value])]
        return cls(
            **(data | {"modes": [Mode(m) for m in data["modes"]], "prompts": tuple(data["prompts"])})
            | {"link": LinkEmulation(**data["link"]), "drafting": drafting}
        )

    def cells(self) -> list[CellKey]:
        """(rtt, mode, k, drafting) in run order; k is 0 where it does not apply (cloud, edge,
        auto). Edge mode never touches the link: once, at the first RTT."""
        cells = [(self.rtts_ms[0], Mode.EDGE, 0, Drafting.SYNC)] if Mode.EDGE in self.modes else []
        for rtt in self.rtts_ms:
            for mode in self.modes:
                if mode is Mode.SPEC:
                    cells += self._spec_cells(rtt)
                elif mode is Mode.COLOCATED:
                    cells += [(rtt, mode, k, Drafting.SYNC) for k in self.ks]
                elif mode is Mode.CLOUD:
                    cells.append((rtt, mode, 0, Drafting.SYNC))
        return cells

    def _spec_cells(self, rtt: float) -> list[CellKey]:
        cells: list[CellKey] = []
        for drafting in self.drafting:
            if drafting is Drafting.AUTO:
                cells.append((rtt, Mode.SPEC, 0, drafting))
            else:
                cells += [(rtt, Mode.SPEC, k, drafting) for k in self.ks]
        return cells


@dataclass
class Cell:
    rtt_ms: float
    mode: Mode
    k: int
    requests: int
    stats: SpecStats
    drafting: Drafting = Drafting.SYNC

    @property
    def label(self) -> str:
        if self.mode not in SPECULATING:
            return self.mode.value
        if self.drafting is Drafting.AUTO:
            return f"{self.mode.value} auto"
        pipelined = " pipelined" if self.drafting is Drafting.PIPELINED else ""
        return f"{self.mode.value} k={self.k}{pipelined}"

    @property
    def tokens_per_s(self) -> float:
        return self.stats.output_tokens / self.stats.wall_s

    @property
    def ttft_s(self) -> float:
        return self.stats.ttft_s / self.requests

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cell:
        """A cell as `as_dict` wrote it (to re-analyse a saved sweep)."""
        names = {f.name for f in fields(SpecStats)} - {"mode", "ttft_s"}
        stats = SpecStats(mode=data["mode"], **{name: data[name] for name in names if name in data})
        stats.ttft_s = data["mean_ttft_s"] * data["requests"]
        drafting = Drafting(data.get("drafting", Drafting.SYNC.value))
        return cls(data["rtt_ms"], Mode(data["mode"]), data["k"], data["requests"], stats, drafting)

    def as_dict(self) -> dict[str, object]:
        stats = self.stats.as_dict()
        stats.pop("ttft_s")
        return (
            {"rtt_ms": self.rtt_ms, "mode": self.mode.value, "k": self.k, "drafting": self.drafting.value}
            | {"requests": self.requests}
            | stats
            | {
                "tokens_per_s": self.tokens_per_s,
                "mean_ttft_s": self.ttft_s,
            }
        )


Progress = Callable[[Cell], None]  # told of a cell after each of its requests (its totals so far)


async def run_sweep(plan: SweepPlan, on_request: Progress) -> list[Cell]:
    target_path, draft_path = resolve_model_path(plan.target), resolve_model_path(plan.draft)
    cloud_args = ["--draft-model", str(draft_path), "--threads", "1"]
    if plan.pin:
        cloud_args += ["--cpus", str(CLOUD_CORE)]
    with contextlib.ExitStack() as stack:
        scratch = stack.enter_context(tempfile.TemporaryDirectory())
        port = stack.enter_context(cloud_process(target_path, *cloud_args, log=Path(scratch) / "cloud.log"))
        stack.callback(torch.set_num_threads, torch.get_num_threads())  # this process is ours only for now
        if plan.pin:  # only now: the cloud would have inherited this process's cores
            stack.callback(os.sched_setaffinity, 0, os.sched_getaffinity(0))
            os.sched_setaffinity(0, {EDGE_CORE})
        engine, tokenizer = load_engine(draft_path, ModelConfig(str(draft_path), threads=1))
        stack.callback(engine.close)
        cells: list[Cell] = []
        for rtt in plan.rtts_ms:
            links = ResilientLink(LinkConfig(port=port, emulation=_emulation(plan.link, rtt)), tokenizer.identity)
            await links.start(require=True)
            runtime = EdgeRuntime(engine, tokenizer, links, EdgePolicy(), owns_engine=False)
            try:
                if not cells:
                    await _warm_up(runtime, plan)
                cells += await measure_at(runtime, plan, rtt, on_request)
            finally:
                await runtime.aclose()
    return cells


def _emulation(link: LinkEmulation, rtt_ms: float) -> LinkEmulation:
    return LinkEmulation(rtt_ms, link.jitter_ms, link.bandwidth_mbit, link.loss, link.seed)


async def _warm_up(runtime: EdgeRuntime, plan: SweepPlan) -> None:
    """Short requests first, one per mode and draft length: the first forward passes of each
    shape in a process are slow (memory allocation, kernel selection) and would otherwise land in
    whichever cell runs first, or in an adaptive controller's first estimates."""
    prompt = runtime.render_chat([{"role": "user", "content": plan.prompts[0]}])
    for mode in plan.modes:
        for k in plan.ks if mode in SPECULATING else [0]:
            request = GenerationRequest(prompt, WARM_UP_TOKENS + k, mode=mode, num_speculative_tokens=k)
            await runtime.generate(request).collect()


async def measure_at(runtime: EdgeRuntime, plan: SweepPlan, rtt: float, on_request: Progress) -> list[Cell]:
    """Every cell of the plan at one RTT, interleaved: each prompt goes through all the cells in
    turn. A drift in the machine's pace over the minutes this takes then falls on every cell
    alike, rather than on whichever cell ran at the time, and cells can be compared closely."""
    prompts = [runtime.render_chat([{"role": "user", "content": text}]) for text in plan.prompts]
    cells = [
        Cell(rtt, mode, k, 0, SpecStats(mode=mode.value), drafting)
        for at, mode, k, drafting in plan.cells()
        if at == rtt
    ]
    fixed = adaptive = runtime.controller
    if any(cell.drafting is Drafting.AUTO for cell in cells):
        adaptive = await _fresh_controller(runtime, prompts, plan.max_tokens)
    for prompt in prompts:
        for cell in cells:
            # auto's controller learns from auto's requests only, as if its cell ran alone
            runtime.controller = adaptive if cell.drafting is Drafting.AUTO else fixed
            generation = runtime.generate(request_for(prompt, plan.max_tokens, cell.mode, cell.k, cell.drafting))
            await generation.collect()
            cell.stats.add(generation.stats)
            cell.requests += 1
            on_request(cell)
    runtime.controller = fixed
    return cells


async def _fresh_controller(runtime: EdgeRuntime, prompts: list[list[int]], max_tokens: int) -> SpecController:
    """A controller for auto that knows nothing, then learns over one unmeasured pass of the
    prompts: an edge that has served a couple of requests on this link."""
    spec = runtime.policy.spec
    runtime.controller = SpecController(spec.max_adaptive_k, start_k=spec.num_speculative_tokens)
    for prompt in prompts:
        await runtime.generate(request_for(prompt, max_tokens, Mode.SPEC, 0, Drafting.AUTO)).collect()
    return runtime.controller


def request_for(prompt: list[int], max_tokens: int, mode: Mode, k: int, drafting: Drafting) -> GenerationRequest:
    """A sweep cell's request."""
    return GenerationRequest(
        prompt,
        max_tokens,
        mode=mode,
        num_speculative_tokens=AUTO if drafting is Drafting.AUTO else k,
        pipeline=drafting is not Drafting.SYNC,
        ignore_eos=True,
    )
