"""`edgespec demo`: the two halves as users deploy them — an `edgespec cloud` process with the
target and an `edgespec edge` process with the draft, each pinned to its own half of the cores
(two devices emulated on one machine) — driven through the edge's OpenAI API: the same prompt in
all four modes (the cloud also holds the draft, for the co-located baseline), then what was
measured and, labelled as such, a projection for a GPU cloud (demo_report)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from edgespec.config import Mode, ModelConfig, SamplingParams
from edgespec.demo_report import ModeResult, print_report
from edgespec.engine.backends import choose_backend, prepare_model
from edgespec.processes import CLOUD_READY, EDGE_READY, free_port, ready_port, spawned, wait_until_ready

DEFAULT_PROMPT = "Write a Python function that checks whether a number is prime."
REQUEST_TIMEOUT_S = 600.0
WARM_UP_TOKENS = 4


@dataclass(frozen=True)
class DemoOptions:
    prompt: str = DEFAULT_PROMPT
    max_tokens: int = 48
    num_speculative_tokens: int = 4
    draft: str = "demo-draft"
    target: str = "demo-target"
    sampling: SamplingParams = SamplingParams()


def main(options: DemoOptions) -> None:
    for name in (options.target, options.draft):
        prepare_model(ModelConfig(name))  # fetch (and for torch convert) here, where progress shows
    engine = choose_backend(ModelConfig(options.draft))
    cloud_cores, edge_cores = split_cores()
    print(f"starting the cloud on cores {cloud_cores} (target, and the draft for co-located mode) and the edge on")
    print(f"cores {edge_cores} (draft), together; engine: {engine} ...", flush=True)
    with (
        tempfile.TemporaryDirectory() as scratch,
        _cloud_and_edge(options, cloud_cores, edge_cores, Path(scratch)) as base_url,
    ):
        print(f"edge API on {base_url}/v1", flush=True)
        _warm_up(base_url)
        modes_start = process_age_s()
        results = [_run_mode(base_url, mode, options) for mode in Mode]
    print_report(results, options.num_speculative_tokens, engine, cloud_cores, edge_cores)
    first_token_at = modes_start + results[0].first_token_s
    took = process_age_s()
    print(f"\nthe demo took {took:.0f} s from the command; its first streamed token came at {first_token_at:.1f} s")


@contextlib.contextmanager
def _cloud_and_edge(options: DemoOptions, cloud_cores: str, edge_cores: str, logs: Path) -> Iterator[str]:
    """Both processes loading at once, each on its cores (the edge dials until the cloud is up);
    yields the edge's API address."""
    cloud_port = free_port()
    cloud_args = ["cloud", "--model", options.target, "--draft-model", options.draft, "--port", str(cloud_port)]
    edge_args = ["edge", "--model", options.draft, "--cloud", f"127.0.0.1:{cloud_port}", "--port", "0"]
    edge_args += ["-k", str(options.num_speculative_tokens), "--served-model-name", "demo"]
    with (
        spawned([*cloud_args, *_placement(cloud_cores)], logs / "cloud.log") as cloud,
        spawned([*edge_args, *_placement(edge_cores)], logs / "edge.log") as edge,
    ):
        wait_until_ready(cloud, CLOUD_READY, logs / "cloud.log")
        yield f"http://127.0.0.1:{ready_port(wait_until_ready(edge, EDGE_READY, logs / 'edge.log'))}"


def split_cores() -> tuple[str, str]:
    """Disjoint halves of the allowed cores for the cloud and the edge (the same cores on a 1-core machine)."""
    cores = sorted(os.sched_getaffinity(0))
    half = max(len(cores) // 2, 1)
    cloud, edge = cores[:half], cores[half:] or cores[:half]
    return ",".join(map(str, cloud)), ",".join(map(str, edge))


def _placement(cores: str) -> list[str]:
    return ["--cpus", cores, "--threads", str(len(cores.split(",")))]


def _warm_up(base_url: str) -> None:
    """A few tokens in every mode first, all at once: a process's first forward passes are slow
    (allocation, kernel choice), and the first mode measured would pay for it."""

    def warm(mode: Mode) -> None:
        body = {"model": "demo", "prompt": "def", "max_tokens": WARM_UP_TOKENS, "mode": mode.value}
        httpx.post(f"{base_url}/v1/completions", json=body, timeout=REQUEST_TIMEOUT_S).raise_for_status()

    with ThreadPoolExecutor(len(Mode)) as pool:
        list(pool.map(warm, Mode))


def _run_mode(base_url: str, mode: Mode, options: DemoOptions) -> ModeResult:
    print(f"\n── {mode.value} mode " + "─" * 50, flush=True)
    body = {
        "model": "demo",
        "messages": [{"role": "user", "content": options.prompt}],
        "max_tokens": options.max_tokens,
        "temperature": options.sampling.temperature,
        "top_p": options.sampling.top_p,
        "seed": options.sampling.seed,
        "stream": True,
        "stream_options": {"include_usage": True},
        "mode": mode.value,
    }
    started = time.perf_counter()
    first_token_s = 0.0
    usage: dict[str, object] = {}
    for chunk in _events(f"{base_url}/v1/chat/completions", body):
        for choice in chunk["choices"]:
            first_token_s = first_token_s or time.perf_counter() - started
            sys.stdout.write(choice["delta"].get("content") or "")
            sys.stdout.flush()
        usage = chunk.get("usage") or usage
    print()
    return ModeResult(mode, time.perf_counter() - started, first_token_s, usage)


def _events(url: str, body: dict[str, object]) -> Iterator[dict[str, Any]]:
    """The JSON payloads of an SSE response, up to [DONE]."""
    with httpx.stream("POST", url, json=body, timeout=REQUEST_TIMEOUT_S) as response:
        if response.status_code != 200:
            raise RuntimeError(f"the edge answered {response.status_code}: {response.read().decode()}")
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line.removeprefix("data: ")
            if data == "[DONE]":
                return
            payload = json.loads(data)
            if "error" in payload:
                raise RuntimeError(f"the edge reported: {payload['error']['message']}")
            yield payload


def process_age_s() -> float:
    """Seconds since this process started (Linux), so timings include Python's start-up and imports."""
    ticks_since_boot = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    return time.clock_gettime(time.CLOCK_BOOTTIME) - ticks_since_boot / os.sysconf("SC_CLK_TCK")
