"""The model pair on this machine: tokens/s, acceptance rate and mean acceptance length for each
draft length, beside the target alone (cloud mode) and the draft alone (edge mode)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from edgespec.config import LinkConfig, Mode, ModelConfig
from edgespec.edge.launch import start_edge
from edgespec.edge.request import GenerationRequest
from edgespec.edge.runtime import EdgeRuntime
from edgespec.engine.fetch import resolve_model_path
from edgespec.metrics.stats import SpecStats
from edgespec.processes import cloud_process

PROMPTS = {
    "code_chat": "Write a Python function that parses a CSV line into a list of fields.",
    "prose_chat": "Explain in one paragraph why the sky is blue.",
}


async def run(draft: str, target: str, ks: list[int], max_tokens: int, out: str | None) -> None:
    target_path, draft_path = resolve_model_path(target), resolve_model_path(draft)
    with tempfile.TemporaryDirectory() as scratch, cloud_process(target_path, log=Path(scratch) / "cloud.log") as port:
        runtime = await start_edge(ModelConfig(str(draft_path)), LinkConfig(port=port))
        prompts = {name: runtime.render_chat([{"role": "user", "content": text}]) for name, text in PROMPTS.items()}
        cells = [(Mode.CLOUD, 0), (Mode.EDGE, 0)] + [(Mode.SPEC, k) for k in ks]
        print(
            f"{'mode':>6} {'k':>2} {'tokens':>6} {'tok/s':>7} {'accept':>7} {'mean len':>8} {'fwd/token':>9}",
            flush=True,
        )
        results = []
        for mode, k in cells:
            stats = await _measure(runtime, prompts, mode, k, max_tokens)
            results.append({"mode": mode.value, "k": k} | stats.as_dict())
            print(_line(mode, k, stats), flush=True)
        await runtime.aclose()
    if out:
        Path(out).write_text(json.dumps({"max_tokens": max_tokens, "prompts": PROMPTS, "results": results}, indent=1))


async def _measure(
    runtime: EdgeRuntime, prompts: dict[str, list[int]], mode: Mode, k: int, max_tokens: int
) -> SpecStats:
    """All prompts in a row, summed into one SpecStats."""
    total = SpecStats(mode=mode.value)
    for prompt in prompts.values():
        generation = runtime.generate(
            GenerationRequest(prompt, max_tokens, mode=mode, num_speculative_tokens=k, ignore_eos=True)
        )
        await generation.collect()
        total.add(generation.stats)
    return total


def _line(mode: Mode, k: int, stats: SpecStats) -> str:
    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    return (
        f"{mode.value:>6} {k:>2} {stats.output_tokens:>6} {fmt(stats.tokens_per_second):>7} "
        f"{fmt(stats.acceptance_rate):>7} {fmt(stats.mean_acceptance_length):>8} "
        f"{fmt(stats.target_forwards_per_token):>9}"
    )
