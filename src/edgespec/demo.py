"""`edgespec demo`: a real cloud process and an edge on loopback, the same prompt in all three
modes, and a table of what was measured. Nothing is projected here; every figure is measured."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgespec.cloud.process import cloud_process
from edgespec.config import LinkConfig, Mode, ModelConfig, SamplingParams, SpecConfig
from edgespec.edge.generate_once import print_as_generated
from edgespec.edge.launch import start_edge
from edgespec.edge.runtime import EdgeRuntime, GenerationRequest
from edgespec.engine.fetch import resolve_model_path
from edgespec.engine.tokenizer import TokenizerInfo
from edgespec.metrics.stats import SpecStats
from edgespec.transport.client import CloudLink

DEFAULT_PROMPT = "Write a Python function that checks whether a number is prime."
PINGS = 5


@dataclass(frozen=True)
class DemoOptions:
    prompt: str = DEFAULT_PROMPT
    max_tokens: int = 48
    num_speculative_tokens: int = 4
    draft: str = "demo-draft"
    target: str = "demo-target"
    sampling: SamplingParams = SamplingParams()


async def run_demo(options: DemoOptions) -> None:
    target_path = resolve_model_path(options.target)  # fetch and convert here, where progress shows
    draft_path = resolve_model_path(options.draft)
    print("starting the cloud (target model) ...", flush=True)
    with tempfile.TemporaryDirectory() as scratch, cloud_process(target_path, log=Path(scratch) / "cloud.log") as port:
        runtime, tokenizer = await start_edge(
            ModelConfig(str(draft_path)), LinkConfig(port=port), SpecConfig(options.num_speculative_tokens)
        )
        assert runtime.link is not None
        try:
            prompt = tokenizer.render_chat(
                [{"role": "user", "content": options.prompt}], runtime.link.welcome.chat_template
            )
            rtt_ms = await _median_rtt_ms(runtime.link)
            results = [await _run_mode(runtime, tokenizer, prompt, mode, options) for mode in Mode]
        finally:
            await runtime.link.close()
            runtime.close()
    _print_table(results, rtt_ms, options)


async def _run_mode(
    runtime: EdgeRuntime, tokenizer: TokenizerInfo, prompt: list[int], mode: Mode, options: DemoOptions
) -> SpecStats:
    print(f"\n── {mode.value} mode " + "─" * 50, flush=True)
    request = GenerationRequest(prompt, options.max_tokens, options.sampling, mode=mode)
    generation = runtime.generate(request)
    await print_as_generated(generation, tokenizer)
    return generation.stats


async def _median_rtt_ms(link: CloudLink) -> float:
    return statistics.median([await link.ping() for _ in range(PINGS)]) * 1000


def _print_table(results: list[SpecStats], rtt_ms: float, options: DemoOptions) -> None:
    header = (
        "mode",
        "tokens",
        "tok/s",
        "accept rate",
        "mean acc len",
        "target fwd/token",
        "bytes up/round",
        "bytes down/round",
    )
    rows = [header] + [_row(stats) for stats in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    print(f"\nk = {options.num_speculative_tokens}, loopback RTT {rtt_ms:.2f} ms (median of {PINGS} pings)")
    for row in rows:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
    print(
        "\nOn a 2-core CPU a forward over k+1 tokens costs several single-token forwards, so spec mode is often\n"
        "slower here than cloud mode; its gain is the cloud's forward passes per token (target fwd/token).\n"
        "On a GPU cloud a (k+1)-token verify costs about one step. See docs/benchmarks.md."
    )


def _row(stats: SpecStats) -> tuple[str, ...]:
    def fmt(value: float | None, digits: int = 2) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    rounds = stats.rounds or None
    return (
        stats.mode,
        str(stats.output_tokens),
        fmt(stats.tokens_per_second),
        fmt(stats.acceptance_rate),
        fmt(stats.mean_acceptance_length),
        fmt(stats.target_forwards_per_token),
        fmt(stats.bytes_up / rounds if rounds else None, 0),
        fmt(stats.bytes_down / rounds if rounds else None, 0),
    )


def main(options: DemoOptions) -> None:
    asyncio.run(run_demo(options))
