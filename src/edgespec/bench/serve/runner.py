"""The run: requests leave on a Poisson (or gamma, with burstiness) schedule, at most
`max_concurrency` in flight, with a progress bar; the server's counters are read around it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import httpx
import numpy as np
from tqdm import tqdm

from edgespec.bench.serve.client import RequestOutput, RequestShape, send
from edgespec.bench.serve.dataset import SampleRequest
from edgespec.bench.serve.server_stats import scrape, speculation
from edgespec.bench.serve.summary import summarize


@dataclass(frozen=True)
class Schedule:
    request_rate: float  # requests per second; inf sends them all at once
    burstiness: float  # 1: Poisson; lower: burstier; higher: more even
    max_concurrency: int | None
    seed: int

    def __post_init__(self) -> None:
        if self.request_rate <= 0 or self.burstiness <= 0:
            raise ValueError("--request-rate and --burstiness must be positive")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError("--max-concurrency must be at least 1")

    async def arrivals(self, samples: Sequence[SampleRequest]) -> AsyncIterator[SampleRequest]:
        rng = np.random.default_rng(self.seed)
        for sample in samples:
            yield sample
            if self.request_rate != float("inf"):
                await asyncio.sleep(rng.gamma(self.burstiness, 1.0 / (self.request_rate * self.burstiness)))


async def run(
    shape: RequestShape,
    samples: Sequence[SampleRequest],
    schedule: Schedule,
    metrics_url: str,
    percentiles: Sequence[float],
) -> dict[str, object]:
    limits = httpx.Limits(max_connections=schedule.max_concurrency, max_keepalive_connections=schedule.max_concurrency)
    async with httpx.AsyncClient(timeout=httpx.Timeout(None, connect=30), limits=limits) as client:
        before = await scrape(client, metrics_url)
        started = time.perf_counter()
        outputs = await _send_all(client, shape, samples, schedule)
        duration = time.perf_counter() - started
        after = await scrape(client, metrics_url)
    result = summarize(outputs, duration, percentiles)
    output_tokens = result["total_output_tokens"]
    assert isinstance(output_tokens, int)
    return result | {"speculation": speculation(before, after, output_tokens)}


async def _send_all(
    client: httpx.AsyncClient, shape: RequestShape, samples: Sequence[SampleRequest], schedule: Schedule
) -> list[RequestOutput]:
    gate = asyncio.Semaphore(schedule.max_concurrency or len(samples) or 1)
    with tqdm(total=len(samples), unit="req") as bar:

        async def one(sample: SampleRequest) -> RequestOutput:
            async with gate:
                output = await send(client, shape, sample)
            bar.update()
            return output

        tasks = [asyncio.create_task(one(sample)) async for sample in schedule.arrivals(samples)]
        return list(await asyncio.gather(*tasks))
