"""`edgespec bench load`: a soak test. One cloud and several edges run as real processes; many
streaming clients, spread over the edges, send requests back to back for a fixed time. After a
warm-up at full load, the memory of every process and the open sessions are taken as the
baseline; after the run they must come back to it, and no request may fail."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from tqdm import tqdm

from edgespec.bench.serve.client import RequestOutput, RequestShape, send
from edgespec.bench.serve.dataset import SampleRequest, random_requests
from edgespec.bench.serve.server_stats import scrape
from edgespec.engine.fetch import resolve_model_path
from edgespec.engine.loading import load_tokenizer
from edgespec.processes import CLOUD_READY, EDGE_READY, Started, ready_field, ready_port, started_process

SETTLE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class LoadPlan:
    edges: int = 1
    concurrency: int = 64  # streaming clients in all, spread round-robin over the edges
    duration_s: float = 180.0
    warmup_s: float = 15.0
    target: str = "tiny-target"
    draft: str = "tiny-draft"
    prompt_len: int = 32
    output_len: int = 64
    k: int = 4
    mode: str = "spec"

    def __post_init__(self) -> None:
        if self.edges < 1 or self.concurrency < 1:
            raise ValueError("--edges and --concurrency must be at least 1")
        if self.duration_s <= 0 or self.warmup_s < 0:
            raise ValueError("--duration must be positive and --warmup not negative")


@dataclass
class Server:
    name: str
    started: Started
    metrics_url: str
    gauge: str  # the metric that counts its open work: sessions (cloud) or running requests (edge)

    def rss_mib(self) -> float:
        """Resident memory from /proc (Linux)."""
        for line in Path(f"/proc/{self.started.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise ValueError(f"no VmRSS for {self.name}")


@dataclass(frozen=True)
class Fleet:
    cloud: Server
    edges: list[Server]

    @property
    def servers(self) -> list[Server]:
        return [self.cloud, *self.edges]


@contextlib.contextmanager
def fleet(plan: LoadPlan, log_dir: Path | None) -> Iterator[Fleet]:
    """The cloud and the edges, one thread each, with their metrics pages."""
    log = (lambda name: log_dir / f"{name}.log") if log_dir else (lambda name: None)
    with contextlib.ExitStack() as stack:
        cloud_args = ["cloud", "--model", plan.target, "--port", "0", "--metrics-port", "0", "--threads", "1"]
        cloud = stack.enter_context(started_process(cloud_args, CLOUD_READY, log("cloud")))
        metrics = f"http://{ready_field(cloud.ready, 'metrics')}/metrics"
        servers = Fleet(Server("cloud", cloud, metrics, "edgespec:cloud_sessions_active"), [])
        for number in range(plan.edges):
            edge_args = ["edge", "--model", plan.draft, "--cloud", f"127.0.0.1:{ready_port(cloud.ready)}"]
            edge_args += ["--port", "0", "--threads", "1", "-k", str(plan.k), "--mode", plan.mode]
            edge = stack.enter_context(started_process(edge_args, EDGE_READY, log(f"edge{number}")))
            url = f"http://127.0.0.1:{ready_port(edge.ready)}"
            servers.edges.append(Server(f"edge{number}", edge, f"{url}/metrics", "edgespec:num_requests_running"))
        yield servers


@dataclass
class Phase:
    """What one timed stretch of load produced."""

    outputs: list[RequestOutput]
    duration_s: float
    peak_rss_mib: dict[str, float]


async def drive(servers: Fleet, plan: LoadPlan, samples: Sequence[SampleRequest], seconds: float, label: str) -> Phase:
    """`plan.concurrency` clients sending back to back for `seconds`, with a progress bar."""
    limits = httpx.Limits(max_connections=plan.concurrency, max_keepalive_connections=plan.concurrency)
    shapes = [_shape(edge, plan.draft) for edge in servers.edges]
    outputs: list[RequestOutput] = []
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(timeout=httpx.Timeout(120, connect=30), limits=limits) as client:

        async def client_loop(number: int) -> None:
            shape = shapes[number % len(shapes)]
            for sample in itertools.islice(itertools.cycle(samples), number, None):
                if time.monotonic() >= deadline:
                    return
                outputs.append(await send(client, shape, sample))

        started = time.monotonic()
        clients = asyncio.gather(*(client_loop(n) for n in range(plan.concurrency)))
        peak = await _watch(servers, outputs, clients, seconds, label)
    return Phase(outputs, time.monotonic() - started, peak)


async def _watch(
    servers: Fleet, outputs: list[RequestOutput], clients: asyncio.Future[list[None]], seconds: float, label: str
) -> dict[str, float]:
    """Progress each second, and the peak memory of every process, until the clients finish."""
    peak = {server.name: 0.0 for server in servers.servers}
    with tqdm(total=round(seconds), desc=label, unit="s", bar_format="{l_bar}{bar}| {n:.0f}/{total} s{postfix}") as bar:
        while not clients.done():
            await asyncio.wait({clients}, timeout=1.0)
            for server in servers.servers:
                peak[server.name] = max(peak[server.name], server.rss_mib())
            failed = sum(not output.success for output in outputs)
            bar.set_postfix_str(f"requests {len(outputs)}, failed {failed}")
            bar.update(min(1.0, bar.total - bar.n))
    await clients
    return peak


async def settle(servers: Fleet) -> dict[str, float]:
    """Wait for every open session and running request to end; returns each server's gauge."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    async with httpx.AsyncClient() as client:
        while True:
            open_work = {server.name: await _gauge(client, server) for server in servers.servers}
            if not any(open_work.values()) or time.monotonic() > deadline:
                return open_work
            await asyncio.sleep(0.2)


async def _gauge(client: httpx.AsyncClient, server: Server) -> float:
    samples = await scrape(client, server.metrics_url)
    if samples is None:
        raise RuntimeError(f"{server.name} has no metrics page at {server.metrics_url}")
    return samples.get((server.gauge, ()), 0.0)


def _shape(edge: Server, model: str) -> RequestShape:
    url = f"http://127.0.0.1:{ready_port(edge.started.ready)}/v1/completions"
    return RequestShape(url, chat=False, model=model, temperature=0.0, top_p=1.0, ignore_eos=True, api_key=None)


def load_samples(plan: LoadPlan, count: int = 256) -> list[SampleRequest]:
    tokenizer = load_tokenizer(resolve_model_path(plan.draft))
    return random_requests(tokenizer, count, plan.prompt_len, plan.output_len, range_ratio=0.25, seed=0)
