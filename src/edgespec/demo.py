"""`edgespec demo`: the two halves as users deploy them — an `edgespec cloud` process with the
target and an `edgespec edge` process with the draft — driven through the edge's OpenAI API, the
same prompt in all four modes (the cloud also holds the draft, for the co-located baseline), and
a table of what was measured. Every figure is measured."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from edgespec.config import Mode, SamplingParams
from edgespec.engine.fetch import resolve_model_path
from edgespec.processes import cloud_process, edge_process

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


@dataclass(frozen=True)
class ModeResult:
    mode: Mode
    seconds: float
    usage: dict[str, object]


def main(options: DemoOptions) -> None:
    target_path = resolve_model_path(options.target)  # fetch and convert here, where progress shows
    draft_path = resolve_model_path(options.draft)
    with tempfile.TemporaryDirectory() as scratch:
        logs = Path(scratch)
        print("starting the cloud (target model, and the draft for co-located mode) ...", flush=True)
        with cloud_process(target_path, "--draft-model", str(draft_path), log=logs / "cloud.log") as cloud_port:
            print(f"cloud up on 127.0.0.1:{cloud_port}; starting the edge (draft model) ...", flush=True)
            k = str(options.num_speculative_tokens)
            with edge_process(
                draft_path, cloud_port, "-k", k, "--served-model-name", "demo", log=logs / "edge.log"
            ) as port:
                print(f"edge API on http://127.0.0.1:{port}/v1", flush=True)
                base_url = f"http://127.0.0.1:{port}"
                _warm_up(base_url)
                results = [_run_mode(base_url, mode, options) for mode in Mode]
    _print_table(results, options)


def _warm_up(base_url: str) -> None:
    """A few tokens in every mode first: a process's first forward passes are slow (allocation,
    kernel choice), and the first mode measured would pay for it."""
    for mode in Mode:
        body = {"model": "demo", "prompt": "def", "max_tokens": WARM_UP_TOKENS, "mode": mode.value}
        httpx.post(f"{base_url}/v1/completions", json=body, timeout=REQUEST_TIMEOUT_S).raise_for_status()


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
    usage: dict[str, object] = {}
    for chunk in _events(f"{base_url}/v1/chat/completions", body):
        for choice in chunk["choices"]:
            sys.stdout.write(choice["delta"].get("content") or "")
            sys.stdout.flush()
        usage = chunk.get("usage") or usage
    print()
    return ModeResult(mode, time.perf_counter() - started, usage)


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


def _print_table(results: list[ModeResult], options: DemoOptions) -> None:
    header = ("mode", "tokens", "tok/s", "accept rate", "mean acc len", "cloud fwd/token", "bytes up/round")
    rows = [header] + [_row(result) for result in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    print(f"\nk = {options.num_speculative_tokens}, through the edge's HTTP API on loopback (wall time per request)")
    for row in rows:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
    print(
        "\nOn a 2-core CPU a forward over k+1 tokens costs several single-token forwards, so whether spec mode\n"
        "beats cloud mode here depends on k and on the link (docs/benchmarks.md: the sweep's crossover RTT);\n"
        "its steady gain is the cloud's work: forward passes per output token (cloud fwd/token).\n"
        "On a GPU cloud a (k+1)-token verify costs about one step.\n"
        "Run the halves yourself: `edgespec cloud --model demo-target` and\n"
        "`edgespec edge --model demo-draft --cloud 127.0.0.1:8083`, then point any OpenAI client at\n"
        "http://127.0.0.1:8082/v1."
    )


def _row(result: ModeResult) -> tuple[str, ...]:
    def fmt(value: object, digits: int = 2) -> str:
        return "-" if not isinstance(value, int | float) else f"{value:.{digits}f}"

    tokens = result.usage.get("completion_tokens", 0)
    spec = result.usage.get("speculation") or {}
    assert isinstance(tokens, int) and isinstance(spec, dict)
    drafts = spec.get("num_drafts") or 0
    return (
        result.mode.value,
        str(tokens),
        fmt(tokens / result.seconds),
        fmt(spec.get("acceptance_rate")),
        fmt(spec.get("mean_acceptance_length")),
        fmt(spec.get("cloud_forward_passes", 0) / tokens if tokens else None),
        fmt(spec.get("bytes_up", 0) / drafts if drafts else None, 0),
    )
