"""`edgespec bench engines`: the same model on each backend — load time, greedy decode speed (one
token per forward, as a draft and cloud-mode decoding run) and what a forward over m new tokens
costs against one (what a verify pass costs the cloud)."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

from edgespec.config import ModelConfig
from edgespec.engine.backends import llamacpp_installed, open_model
from edgespec.engine.base import Engine

PROMPT = "Write a Python function that checks whether a number is prime, with a docstring and tests."
REPEATS = 5


@dataclass(frozen=True)
class EngineFigures:
    engine: str
    load_s: float
    decode_tokens_per_s: float
    forward_ms: dict[int, float]  # new tokens per call → median ms, after the prompt

    def cost_ratio(self, tokens: int) -> float:
        return self.forward_ms[tokens] / self.forward_ms[1]


def measure(name: str, engine: str, threads: int, decode_tokens: int, widths: list[int]) -> EngineFigures:
    started = time.perf_counter()
    model, tokenizer = open_model(ModelConfig(name, threads=threads, engine=engine))
    load_s = time.perf_counter() - started
    prompt = tokenizer.encode(PROMPT)
    try:
        rate = _decode_rate(model, prompt, decode_tokens)
        forward_ms = {width: _forward_ms(model, prompt, width) for width in sorted({1, *widths})}
    finally:
        model.close()
    return EngineFigures(engine, load_s, rate, forward_ms)


def _decode_rate(model: Engine, prompt: list[int], tokens: int) -> float:
    session = model.new_session()
    token = int(model.forward(session, prompt, 1)[0].argmax())
    started = time.perf_counter()
    for _ in range(tokens):
        token = int(model.forward(session, [token], 1)[0].argmax())
    elapsed = time.perf_counter() - started
    model.release(session)
    return tokens / elapsed


def _forward_ms(model: Engine, prompt: list[int], width: int) -> float:
    """Median time of one forward over `width` new tokens after the prompt, rolled back each time."""
    session = model.new_session()
    model.forward(session, prompt, 1)
    samples = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        model.forward(session, (prompt * width)[:width], width)  # any tokens: the cost depends on the count
        samples.append(time.perf_counter() - started)
        model.truncate(session, len(prompt))
    model.release(session)
    return statistics.median(samples) * 1000


def run(name: str, threads: int, decode_tokens: int, widths: list[int]) -> list[dict[str, object]]:
    engines = ["torch", "llamacpp"] if llamacpp_installed() else ["torch"]
    figures = []
    for engine in engines:
        print(f"measuring {name} on {engine} ({threads} thread(s)) ...", flush=True)
        figures.append(measure(name, engine, threads, decode_tokens, widths))
    _print(figures, widths)
    return [asdict(figure) for figure in figures]


def _print(figures: list[EngineFigures], widths: list[int]) -> None:
    header = ["engine", "load s", "decode tok/s", *[f"{w} tok / 1" for w in widths if w != 1]]
    rows = [header]
    for figure in figures:
        ratios = [f"{figure.cost_ratio(w):.2f}x" for w in widths if w != 1]
        rows.append([figure.engine, f"{figure.load_s:.1f}", f"{figure.decode_tokens_per_s:.1f}", *ratios])
    column = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, column, strict=True)))
    if len(figures) == 2:
        speedup = figures[1].decode_tokens_per_s / figures[0].decode_tokens_per_s
        print(f"llama.cpp decodes {speedup:.1f}x as fast as torch float32 here")
