"""The sweep's plots (matplotlib, written as PNG files)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed

import matplotlib.pyplot as plt

from edgespec.bench.analysis import Analysis
from edgespec.bench.strategies import compare
from edgespec.bench.sweep import SPECULATING, Cell, Drafting
from edgespec.config import Mode

PALETTE_SIZE = 10
STYLE = {Mode.SPEC: "-", Mode.COLOCATED: ":", Mode.CLOUD: "-", Mode.EDGE: "--"}


def write_plots(cells: list[Cell], analysis: Analysis, out: Path) -> list[Path]:
    plots = [
        _throughput(cells, analysis, out / "tokens_per_s_vs_rtt.png"),
        _ttft(cells, out / "ttft_vs_rtt.png"),
        _acceptance(cells, out / "acceptance_per_position.png"),
        _forwards(cells, out / "cloud_forwards_per_token.png"),
    ]
    if any(cell.drafting is not Drafting.SYNC for cell in cells):
        plots.append(_strategies(cells, out / "strategies_vs_rtt.png"))
    return plots


def _fixed_scheme(cells: list[Cell]) -> Drafting:
    """The drafting scheme whose fixed-k cells the per-k plots show: synchronous rounds, as the
    model does, or pipelined ones in a sweep that has no synchronous cells (the strategies plot
    compares the schemes)."""
    speculating = [cell for cell in cells if cell.mode in SPECULATING]
    return Drafting.SYNC if any(cell.drafting is Drafting.SYNC for cell in speculating) else Drafting.PIPELINED


def _series(cells: list[Cell]) -> dict[str, list[Cell]]:
    """Cells by label, one line each: the modes without rounds and the fixed-k scheme's cells."""
    scheme = _fixed_scheme(cells)
    series: dict[str, list[Cell]] = {}
    for cell in cells:
        if cell.drafting in (Drafting.SYNC, scheme):  # cloud and edge cells count as synchronous
            series.setdefault(cell.label, []).append(cell)
    return series


def _throughput(cells: list[Cell], analysis: Analysis, path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(8, 5))
    rtts = sorted({cell.rtt_ms for cell in cells})
    shown = [cell.tokens_per_s for cell in cells if cell.mode is not Mode.EDGE]
    top = max(shown, default=1.0) * 1.3
    for label, line in _series(cells).items():
        mode = line[0].mode
        if mode is Mode.EDGE:  # the draft alone never touches the link; often far above the rest
            value = line[0].tokens_per_s
            axes.plot(rtts, [min(value, top * 0.97)] * len(rtts), "--", color="gray", label=f"edge alone: {value:.2f}")
            continue
        color = _color(mode, line[0].k)
        axes.plot([c.rtt_ms for c in line], [c.tokens_per_s for c in line], STYLE[mode], marker="o", color=color,
                  label=label)  # fmt: skip
        predicted = [(c.rtt_ms, analysis.prediction(c)) for c in line if analysis.prediction(c) is not None]
        if predicted:
            axes.plot(*zip(*predicted, strict=True), linestyle=(0, (2, 2)), color=color, alpha=0.6)
    if analysis.crossover_ms is not None and 0 < analysis.crossover_ms <= max(rtts):
        axes.axvline(analysis.crossover_ms, color="red", alpha=0.4, label=f"crossover {analysis.crossover_ms:.0f} ms")
    axes.set(xlabel="round-trip time (ms)", ylabel="output tokens/s", title="Throughput vs RTT (thin dashes: model)")
    axes.set_ylim(0, top)
    axes.legend(fontsize=8, ncol=2)
    return _save(figure, path)


def _color(mode: Mode, k: int) -> str:
    """One colour per draft length, shared by spec and co-located; black for the cloud alone."""
    if mode is Mode.CLOUD:
        return "black"
    return f"C{k % PALETTE_SIZE}"  # matplotlib's default cycle: C0 … C9 (k = 4, 5, 6 apart)


def _ttft(cells: list[Cell], path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(8, 5))
    for label, line in _series(cells).items():
        if line[0].mode is not Mode.EDGE:
            axes.plot(
                [c.rtt_ms for c in line], [c.ttft_s * 1000 for c in line], STYLE[line[0].mode], marker="o", label=label
            )
    axes.set(xlabel="round-trip time (ms)", ylabel="mean time to first token (ms)", title="TTFT vs RTT")
    axes.legend(fontsize=8)
    return _save(figure, path)


def _acceptance(cells: list[Cell], path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(8, 5))
    base = min(cell.rtt_ms for cell in cells)
    scheme = _fixed_scheme(cells)
    spec = [c for c in cells if c.mode is Mode.SPEC and c.drafting is scheme and c.rtt_ms == base]
    width = 0.8 / max(len(spec), 1)
    for i, cell in enumerate(spec):
        rates = [accepted / cell.stats.rounds for accepted in cell.stats.accepted_per_position]
        axes.bar([p + i * width for p in range(len(rates))], rates, width, label=f"k={cell.k}")
    axes.set(xlabel="draft position", ylabel="share of rounds accepting it", title="Acceptance per position")
    axes.legend(fontsize=8)
    return _save(figure, path)


def _forwards(cells: list[Cell], path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(8, 5))
    base = min(cell.rtt_ms for cell in cells)
    shown = [c for c in cells if c.rtt_ms == base and c.mode is not Mode.EDGE]
    values = [c.stats.target_forwards_per_token or 0.0 for c in shown]
    axes.bar([c.label for c in shown], values)
    axes.set(ylabel="cloud forward passes per output token", title="Cloud work per output token")
    axes.tick_params(axis="x", rotation=45)
    return _save(figure, path)


def _strategies(cells: list[Cell], path: Path) -> Path:
    """Per RTT: the best synchronous k, the best pipelined k, auto, and cloud decoding."""
    figure, axes = plt.subplots(figsize=(8, 5))
    rows = compare(cells)
    rtts = [row.rtt_ms for row in rows]

    def best(drafting: Drafting) -> list[float]:
        return [
            max((c.tokens_per_s for c in cells if c.rtt_ms == rtt and c.mode is Mode.SPEC and c.drafting is drafting),
                default=math.nan)
            for rtt in rtts
        ]  # fmt: skip

    cloud = [r.cloud.tokens_per_s if r.cloud else math.nan for r in rows]
    lines = [
        (best(Drafting.SYNC), "o", "C0", 1.5, "best fixed k, synchronous"),
        (best(Drafting.PIPELINED), "o", "C2", 1.5, "best fixed k, pipelined"),
        (best(Drafting.AUTO), "s", "C3", 2.5, "auto (k and mode chosen online)"),
        (cloud, "o", "black", 1.5, "cloud decoding"),
    ]
    for values, marker, color, width, label in lines:
        if not all(math.isnan(v) for v in values):  # a scheme the sweep did not run gets no line
            axes.plot(rtts, values, marker=marker, color=color, linewidth=width, label=label)
    axes.set(xlabel="round-trip time (ms)", ylabel="output tokens/s", title="Drafting strategies vs RTT")
    axes.set_ylim(bottom=0)
    axes.legend(fontsize=8)
    return _save(figure, path)


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
