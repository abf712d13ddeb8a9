"""`edgespec bench capacity`: the capacity argument for edge drafting, measured. One cloud (the
static engine, synthetic acceptance α) in this process serves N simulated edges played by a few
other processes, each edge over its own TCP connection on loopback with the real wire protocol.
First every edge speculates (k random tokens a round, so drafting costs the cloud nothing), then
every edge asks for cloud-mode decoding of the same sessions; the cloud batches both across
sessions. Sessions have a fixed prompt and a fixed budget of new tokens, and re-open when it is
spent; each edge's first session starts part-way through its life (lives()), and a warm-up passes
before anything counts, so what is measured is the steady state. The figures: output tokens per
second of the cloud (per GPU-second: the GPU serves nothing else) and per session."""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from edgespec import event_loop
from edgespec.bench.capacity_tally import BatchClock, Tally, TimedEngine
from edgespec.bench.simulated_gpu import SimulatedGPU, StepCosts
from edgespec.bench.verifier import ARCHITECTURES, random_model
from edgespec.cloud.server import CloudServer
from edgespec.cloud.verifier import Verifier
from edgespec.config import DEFAULT_BATCH_WINDOW_S, CloudConfig, Limits, LinkConfig, ModelConfig, SamplingParams
from edgespec.engine.static_engine import StaticEngine
from edgespec.engine.tiny import TINY_VOCAB, build_tokenizer
from edgespec.engine.tokenizer import TokenizerInfo
from edgespec.protocol.messages import Draft, TokenizerId
from edgespec.transport.client import CloudLink

TOKENS = range(1000, 2000)  # what prompts and drafts are drawn from: inside every model's vocabulary
CONNECT_S = 3.0  # for the edge processes to connect before a phase's clock starts


@dataclass(frozen=True)
class Phase:
    mode: str
    tokens: int
    seconds: float
    per_session_tokens_per_s: float
    tally: Tally | None = None  # the cloud's forward calls in the phase

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


@dataclass(frozen=True)
class Window:
    """A phase's clock (time.monotonic(): one for every process on the machine): sessions open at
    start_at, their tokens count from measure_at, and they stop at the deadline."""

    start_at: float
    measure_at: float
    deadline: float

    def counted(self, tokens: int) -> int:
        """`tokens` if they came inside the measured part, else none."""
        return tokens if self.measure_at <= time.monotonic() < self.deadline else 0

    def over(self) -> bool:
        return time.monotonic() >= self.deadline


def lives(prompt: list[int], budget: int, k: int) -> Iterator[tuple[list[int], int]]:
    """An edge's sessions, as (prompt, new tokens). The first is already part-way through its life,
    at a random point: its prompt holds what it would have generated so far and its budget is what
    it would have left. So from the first measured moment the sessions are spread over their lives
    as in a steady state, with contexts of every length and re-openings out of step; started
    together, a phase shorter than a few lives would see mostly young, short contexts (cheap
    steps), and more so in the slower mode."""
    lived = random.randrange(max(1, budget - k - 1))  # a first block still fits in what is left
    yield prompt + [random.choice(TOKENS) for _ in range(lived)], budget - lived
    while True:
        yield prompt, budget


async def speculating_edge(link: CloudLink, prompt: list[int], budget: int, k: int, window: Window) -> int:
    produced = 0
    for opening, new_tokens in lives(prompt, budget, k):
        if window.over():
            break
        session = link.session()
        verdict = await session.first_round(opening, SamplingParams(), new_tokens, _draft(k), None)
        made = verdict.accepted + 1
        produced += window.counted(made)
        while made + k + 1 <= new_tokens and not window.over():
            verdict = await session.round(len(opening) + made, _draft(k))
            made += verdict.accepted + 1
            produced += window.counted(verdict.accepted + 1)
        session.close()
    return produced


async def decoding_edge(link: CloudLink, prompt: list[int], budget: int, window: Window) -> int:
    produced = 0
    for opening, new_tokens in lives(prompt, budget, 0):
        if window.over():
            break
        session = link.session()
        async for message in session.stream(opening, SamplingParams(), new_tokens, True, None, None):
            produced += window.counted(len(message.tokens))
            if window.over():
                break
        session.close()
    return produced


def _draft(k: int) -> Draft:
    return Draft(tokens=[random.choice(TOKENS) for _ in range(k)])


@dataclass(frozen=True)
class Plan:
    sessions: int
    alpha: float
    k: int
    context: int
    budget: int
    seconds: float
    warm_up_s: float = 5.0  # per mode, before its tokens count: the first sessions' long prompts (see lives)
    edge_processes: int = 2  # the simulated edges' processes: the cloud's loop must not also play them
    batch_window_s: float = DEFAULT_BATCH_WINDOW_S  # the cloud's (cloud/batcher.py)


@dataclass(frozen=True)
class EdgeGroup:
    """What one process of simulated edges needs (it is pickled to a fresh interpreter)."""

    port: int
    tokenizer: TokenizerId
    sessions: int
    mode: str
    prompt: list[int]
    budget: int
    k: int
    window: Window


def run_edge_group(group: EdgeGroup) -> int:
    """In a worker process: the group's edges over their own connections; tokens produced. On the
    cloud's fast loop too: a slow edge would show up as the cloud waiting for drafts."""
    return event_loop.run(_edge_group(group))


async def _edge_group(group: EdgeGroup) -> int:
    links = [await CloudLink.connect(LinkConfig(port=group.port), group.tokenizer) for _ in range(group.sessions)]
    await asyncio.sleep(max(0.0, group.window.start_at - time.monotonic()))
    try:
        if group.mode == "spec":
            edges = (speculating_edge(link, group.prompt, group.budget, group.k, group.window) for link in links)
        else:
            edges = (decoding_edge(link, group.prompt, group.budget, group.window) for link in links)
        return sum(await asyncio.gather(*edges))
    finally:
        for link in links:
            await link.close()


async def phase(
    pool: ProcessPoolExecutor, port: int, identity: TokenizerId, plan: Plan, mode: str, timed: TimedEngine,
    clock: BatchClock,
) -> Phase:  # fmt: skip
    """One mode: the edges warm up, then their tokens and the cloud's calls count for plan.seconds."""
    window = _window(plan.warm_up_s, plan.seconds)
    edges = _edges(pool, port, identity, plan, mode, window)
    await asyncio.sleep(window.measure_at - time.monotonic())
    since = timed.mark()
    tokens = sum(await edges)
    return Phase(
        mode, tokens, plan.seconds, tokens / plan.seconds / plan.sessions, timed.tally(since, plan.seconds, clock)
    )


async def warm_up(pool: ProcessPoolExecutor, port: int, identity: TokenizerId, plan: Plan, mode: str) -> None:
    """The mode's traffic for plan.warm_up_s, counted nowhere: one-time costs fall in it (on a GPU,
    kernels compiled for the first prompts longer than the prompt graphs: seconds)."""
    await _edges(pool, port, identity, plan, mode, _window(plan.warm_up_s, 0.0))


def _window(warm_up_s: float, seconds: float) -> Window:
    start_at = time.monotonic() + CONNECT_S
    return Window(start_at, start_at + warm_up_s, start_at + warm_up_s + seconds)


def _edges(
    pool: ProcessPoolExecutor, port: int, identity: TokenizerId, plan: Plan, mode: str, window: Window
) -> asyncio.Future[list[int]]:
    """The plan's edges, in their processes; each group's count of tokens."""
    prompt = [random.choice(TOKENS) for _ in range(plan.context)]
    sizes = [len(part) for part in _split(range(plan.sessions), plan.edge_processes)]
    groups = [EdgeGroup(port, identity, n, mode, prompt, plan.budget, plan.k, window) for n in sizes]
    loop = asyncio.get_running_loop()
    return asyncio.gather(*(loop.run_in_executor(pool, run_edge_group, group) for group in groups))


def _split(items: range, parts: int) -> list[range]:
    return [items[i::parts] for i in range(parts) if items[i::parts]]


async def measure(engine: StaticEngine | SimulatedGPU, plans: list[Plan]) -> list[dict[str, object]]:
    """Each plan's two modes, in turn, against one cloud (closing a cloud closes its engine); the
    figures of each plan."""
    first = plans[0]  # what the cloud is configured with is the same in every plan
    tokenizer = TokenizerInfo(build_tokenizer(TINY_VOCAB), "capacity-bench", eos_token_ids=())
    config = CloudConfig(
        ModelConfig("random weights"), port=0, synthetic_acceptance=first.alpha, batch_window_s=first.batch_window_s,
        limits=Limits(max_context=engine.max_context),  # past the default, for long budgets
    )  # fmt: skip
    timed = TimedEngine(engine)
    server = CloudServer(Verifier(timed, first.alpha), tokenizer, config, "random weights")  # type: ignore[arg-type]
    server.batcher.observer = clock = BatchClock()
    _, port = await server.start()
    spawn = multiprocessing.get_context("spawn")  # never fork a process that holds a CUDA context
    try:
        with ProcessPoolExecutor(first.edge_processes, mp_context=spawn) as pool:
            return [await _both_modes(pool, port, tokenizer.identity, plan, timed, clock) for plan in plans]
    finally:
        await server.close()


async def _both_modes(
    pool: ProcessPoolExecutor, port: int, identity: TokenizerId, plan: Plan, timed: TimedEngine, clock: BatchClock
) -> dict[str, object]:
    print(f"-- {plan.budget} new tokens per session", flush=True)
    results = []
    for mode in ("spec", "cloud"):
        await warm_up(pool, port, identity, plan, mode)
        results.append(await phase(pool, port, identity, plan, mode, timed, clock))
        print(_line(results[-1]), flush=True)
    figures = _run_figures(plan, *results)
    setting = f"{plan.sessions} sessions, α = {plan.alpha}, k = {plan.k}, {plan.budget} tokens each"
    print(
        f"speculation serves {figures['ratio']:.2f}x the output tokens per GPU-second of batched cloud decoding "
        f"({setting})",
        flush=True,
    )
    return figures


def _line(result: Phase) -> str:
    rates = f"{result.tokens_per_s:8.0f} output tok/s of the cloud  {result.per_session_tokens_per_s:7.1f} per session"
    line = f"{result.mode:5s}  {rates}  ({result.tokens} tokens in {result.seconds:.1f} s)"
    if (t := result.tally) is None:
        return line
    line += (
        f"\n       {t.calls / result.seconds:.0f} forward calls/s of {t.mean_batch:.1f} sessions, engine busy "
        f"{t.busy:.0%}; a call {t.round_ms:.2f} ms, {t.prefill_ms:.2f} ms with prefills ({t.prefills} prompts); "
        f"{len(t.graphs_captured)} graphs captured in {t.capture_s:.1f} s"
        + (f" ({', '.join(t.graphs_captured)})" if t.graphs_captured else "")
    )
    if (g := t.gap) is not None:
        line += (
            f"\n       idle between calls (median ms after one call's results): verdicts out {g.verdicts_out_ms:.2f}, "
            f"rounds in {g.first_round_in_ms:.2f} to {g.last_round_in_ms:.2f}, launched {g.launched_ms:.2f}, "
            f"next call {g.next_call_ms:.2f}"
        )
    return line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", default="qwen3-8b", choices=sorted(ARCHITECTURES))
    parser.add_argument("--random-weights", action="store_true", help="the only kind there is on the GPU machine")
    parser.add_argument("--sessions", type=int, default=32, help="simulated edges, one session each")
    parser.add_argument("--alpha", type=float, default=0.8, help="synthetic acceptance per drafted token")
    parser.add_argument("-k", type=int, default=4)
    parser.add_argument("--context", type=int, default=512, help="prompt tokens per session")
    parser.add_argument(
        "--budget", type=budgets, default=[256],
        help="new tokens per session before it re-opens; several, comma-separated, are measured in turn",
    )  # fmt: skip
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per mode")
    parser.add_argument(
        "--warmup", type=float, default=5.0,
        help="seconds per mode before measuring, twice: alone, then with the measured sessions (their "
        "first, part-lived sessions' long prompts run in it: raise it for budgets past 4096)",
    )  # fmt: skip
    parser.add_argument("--edge-processes", type=int, default=2, help="processes that play the edges")
    parser.add_argument(
        "--batch-window-ms",
        type=float,
        default=DEFAULT_BATCH_WINDOW_S * 1000,
        help="the cloud's, as `edgespec cloud` takes it",
    )
    parser.add_argument(
        "--simulate", metavar="CALL,SESSION,PREFILL",
        help="no model: a forward call sleeps CALL ms + SESSION ms per session + PREFILL ms per prompt",
    )  # fmt: skip
    parser.add_argument("--out", help="write the figures as JSON here")
    parser.add_argument("--plot", help="draw the ratio and the GPU's busy share against the budget (PNG)")


def budgets(text: str) -> list[int]:
    """--budget: one count of new tokens per session, or several to compare (comma-separated)."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of token counts: {text!r}") from None
    if any(value < 1 for value in values):
        raise argparse.ArgumentTypeError(f"token counts must be positive: {text!r}")
    return values


def build_engine(args: argparse.Namespace) -> tuple[StaticEngine | SimulatedGPU, str]:
    """The cloud's engine, sized for the longest budget, and what it runs on."""
    # twice the slots: a session that re-opens may do so before the cloud has let its last one go
    slots, context = 2 * args.sessions, args.context + max(args.budget) + 1
    if args.simulate:
        return SimulatedGPU(StepCosts.parse(args.simulate), slots, context), f"simulated GPU ({args.simulate} ms)"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    engine = StaticEngine(random_model(args.arch, device), slots, context, kv_budget=1 << 40)
    if engine.max_context < context:
        raise SystemExit(f"--context plus --budget is {context - 1} tokens; {args.arch} holds {engine.max_context}")
    engine.capture_ahead((1, args.k + 1))  # as the cloud does at start-up: no capture stalls a phase
    return engine, torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def main(args: argparse.Namespace) -> None:
    engine, device = build_engine(args)
    plans = [_plan(args, budget) for budget in args.budget]
    runs = event_loop.run(measure(engine, plans))  # the loop the cloud serves on
    figures = {"arch": None if args.simulate else args.arch, "device": device, "runs": runs}
    if args.out:
        with open(args.out, "w") as file:
            json.dump(figures, file, indent=2)
    if args.plot:
        from edgespec.bench.capacity_plot import plot_capacity  # matplotlib: only when asked

        print(f"plot: {plot_capacity(figures, Path(args.plot))}")


def _plan(args: argparse.Namespace, budget: int) -> Plan:
    return Plan(
        args.sessions, args.alpha, args.k, args.context, budget, args.duration, args.warmup,
        args.edge_processes, args.batch_window_ms / 1000,
    )  # fmt: skip


def _run_figures(plan: Plan, spec: Phase, cloud: Phase) -> dict[str, object]:
    phases = [asdict(r) | {"tokens_per_s": r.tokens_per_s} for r in (spec, cloud)]
    return {"plan": asdict(plan), "phases": phases, "ratio": spec.tokens_per_s / cloud.tokens_per_s}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    main(parser.parse_args())
