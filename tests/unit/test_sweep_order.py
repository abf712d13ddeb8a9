"""The order a sweep measures in (bench/sweep.py): at each RTT every prompt goes through all the
cells in turn, so a drift in the machine's pace falls on all cells alike; auto's controller still
learns from auto's own requests only."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from edgespec.bench.sweep import Drafting, SweepPlan, measure_at
from edgespec.config import AUTO, EdgePolicy, Mode
from edgespec.edge.request import GenerationRequest
from edgespec.metrics.stats import SpecStats


@dataclass
class Served:
    prompt: str
    k: object
    pipeline: bool
    controller: object


class _Generation:
    def __init__(self, mode: str) -> None:
        self.stats = SpecStats(mode=mode, output_tokens=10, wall_s=1.0)

    async def collect(self) -> None:
        return None


@dataclass
class RecordingRuntime:
    """The edge runtime's surface that a sweep uses; records each request it is given."""

    policy: EdgePolicy = field(default_factory=EdgePolicy)
    controller: object = "the edge's controller"
    served: list[Served] = field(default_factory=list)

    def render_chat(self, messages: list[dict[str, str]]) -> list[int]:
        return [ord(c) for c in messages[0]["content"]]

    def generate(self, request: GenerationRequest) -> _Generation:
        prompt = "".join(map(chr, request.prompt))
        self.served.append(Served(prompt, request.num_speculative_tokens, request.pipeline, self.controller))
        return _Generation(request.mode.value)


def test_each_prompt_goes_through_every_cell_before_the_next_prompt() -> None:
    plan = SweepPlan(
        rtts_ms=[10.0],
        ks=[4, 5],
        modes=[Mode.SPEC],
        prompts=("p1", "p2", "p3"),
        drafting=[Drafting.PIPELINED, Drafting.AUTO],
    )
    runtime = RecordingRuntime()
    seen: list[str] = []
    cells = asyncio.run(measure_at(runtime, plan, 10.0, lambda cell: seen.append(cell.label)))  # type: ignore[arg-type]

    learning, measured = runtime.served[:3], runtime.served[3:]
    assert [s.prompt for s in learning] == ["p1", "p2", "p3"] and all(s.k == AUTO for s in learning)
    assert [(s.prompt, s.k) for s in measured] == [(p, k) for p in ("p1", "p2", "p3") for k in (4, 5, AUTO)]
    assert seen == ["spec k=4 pipelined", "spec k=5 pipelined", "spec auto"] * 3
    assert [(cell.label, cell.requests, cell.stats.output_tokens) for cell in cells] == [
        ("spec k=4 pipelined", 3, 30),
        ("spec k=5 pipelined", 3, 30),
        ("spec auto", 3, 30),
    ]
    # auto's requests share one fresh controller (the one that learned); the others never see it
    auto_controllers = {id(s.controller) for s in runtime.served if s.k == AUTO}
    assert len(auto_controllers) == 1
    assert all(s.controller == "the edge's controller" for s in measured if s.k != AUTO)
    assert runtime.controller == "the edge's controller"


def test_plots_show_the_pipelined_cells_of_a_sweep_without_synchronous_ones() -> None:
    from edgespec.bench.plots import _series
    from edgespec.bench.sweep import Cell

    def cell(mode: Mode, k: int, drafting: Drafting) -> Cell:
        return Cell(10.0, mode, k, 1, SpecStats(mode=mode.value), drafting)

    pipelined_only = [
        cell(Mode.SPEC, 4, Drafting.PIPELINED),
        cell(Mode.SPEC, 0, Drafting.AUTO),
        cell(Mode.CLOUD, 0, Drafting.SYNC),
    ]
    assert set(_series(pipelined_only)) == {"spec k=4 pipelined", "cloud"}
    with_sync = [*pipelined_only, cell(Mode.SPEC, 4, Drafting.SYNC)]
    assert set(_series(with_sync)) == {"spec k=4", "cloud"}
