"""A real cloud process (with metrics) and real edge processes on loopback, for the API tests."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
from openai.types import Completion
from prometheus_client.parser import text_string_to_metric_families

from edgespec.api.server import READY_LINE as EDGE_READY
from edgespec.cloud.launch import READY_LINE as CLOUD_READY
from edgespec.processes import (
    edge_process,
    free_port,
    ready_field,
    ready_port,
    server_process,
    stop,
    wait_until_ready,
)

# A greedy request long enough to be cut mid-stream (the link-loss and failover tests)
LONG_PROMPT = "for i in range(10):"
LONG_MAX_TOKENS = 300
LONG_BODY = {"temperature": 0.0, "ignore_eos": True, "return_token_ids": True, "num_speculative_tokens": 1}


def complete_long(client: openai.OpenAI, max_tokens: int = LONG_MAX_TOKENS) -> Completion:
    """The long request, not streamed: the reference an interrupted stream must equal."""
    return client.completions.create(model="tiny", prompt=LONG_PROMPT, max_tokens=max_tokens, extra_body=LONG_BODY)


@dataclass(frozen=True)
class Cloud:
    port: int
    metrics_url: str

    def sessions_active(self) -> float:
        return metric_value(self.metrics_url, "edgespec:cloud_sessions_active")


@contextlib.contextmanager
def cloud_with_metrics(model: Path, *extra: str) -> Iterator[Cloud]:
    args = ["cloud", "--model", str(model), "--port", "0", "--metrics-port", "0", "--threads", "1", *extra]
    with server_process(args, CLOUD_READY, log=None) as ready:
        yield Cloud(ready_port(ready), f"http://{ready_field(ready, 'metrics')}/metrics")


@contextlib.contextmanager
def edge_url(draft: Path, cloud_port: int, *args: str) -> Iterator[str]:
    """An edge process; yields its API base URL (…/v1)."""
    with edge_process(draft, cloud_port, "--threads", "1", "--served-model-name", "tiny", *args) as port:
        yield f"http://127.0.0.1:{port}/v1"


def metric_samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page, parsed by prometheus_client's own parser."""
    text = httpx.get(url, timeout=10).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric_value(url: str, name: str, **labels: str) -> float:
    return metric_samples(url).get((name, tuple(sorted(labels.items()))), 0.0)


def eventually(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


class RestartableCloud:
    """A cloud process on a fixed port that a test can kill and start again."""

    def __init__(self, model: Path) -> None:
        self.model = model
        self.port = free_port()
        self.process: subprocess.Popen[str] | None = None
        self.metrics_url = ""

    def start(self) -> None:
        args = ["cloud", "--model", str(self.model), "--port", str(self.port), "--metrics-port", "0"]
        command = [sys.executable, "-m", "edgespec", *args, "--threads", "1"]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        ready = wait_until_ready(self.process, CLOUD_READY, log=None)
        self.metrics_url = f"http://{ready_field(ready, 'metrics')}/metrics"

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        stop(self.process)

    def sessions_active(self) -> float:
        return metric_value(self.metrics_url, "edgespec:cloud_sessions_active")


class KillableEdge:
    """An edge process a test can kill without warning."""

    def __init__(self, draft: Path, cloud_port: int) -> None:
        command = [
            sys.executable,
            "-m",
            "edgespec",
            "edge",
            "--model",
            str(draft),
            "--cloud",
            f"127.0.0.1:{cloud_port}",
        ]
        command += ["--port", "0", "--threads", "1", "--served-model-name", "tiny"]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.url = f"http://127.0.0.1:{ready_port(wait_until_ready(self.process, EDGE_READY, log=None))}/v1"

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        stop(self.process)


def open_stream(client: openai.OpenAI, prompt: str, max_tokens: int, body: dict) -> Iterator[Completion]:
    """A streamed completion with usage at its end, as an iterator of chunks."""
    return iter(
        client.completions.create(
            model="tiny",
            prompt=prompt,
            max_tokens=max_tokens,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=body,
        )
    )


def read_stream(chunks: Iterator[Completion], ids: list[int]) -> tuple[dict, str]:
    """Read the rest of a stream, appending its token ids to `ids`; (usage, finish reason)."""
    usage: dict = {}
    finish = ""
    for chunk in chunks:
        if chunk.choices:
            ids += chunk.choices[0].model_extra["token_ids"]
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage.model_dump()
    return usage, finish
