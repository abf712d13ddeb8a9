"""The sweep's outputs: results JSON, a Markdown report with the model beside every measured cell,
and the plots."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict
from pathlib import Path

from edgespec.bench.analysis import Analysis
from edgespec.bench.plots import write_plots
from edgespec.bench.strategies import AtRtt, compare
from edgespec.bench.sweep import Cell, Drafting, SweepPlan


def write_report(
    plan: SweepPlan, cells: list[Cell], analysis: Analysis, out: Path, measured_on: str | None = None
) -> Path:
    """Results JSON, report and plots in `out`; `measured_on` names the machine of a saved sweep."""
    out.mkdir(parents=True, exist_ok=True)
    where = measured_on or machine()
    (out / "results.json").write_text(json.dumps(_results(plan, cells, analysis, where), indent=1))
    plots = write_plots(cells, analysis, out)
    report = out / "report.md"
    sections = [_header(plan, where), _strategies(compare(cells)), _table(cells, analysis), _model(analysis)]
    report.write_text("\n".join([line for section in sections for line in section] + _figures(plots)))
    return report


def machine() -> str:
    model = next(
        (line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), platform.processor()
    )
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def _cpuinfo() -> list[str]:
    path = Path("/proc/cpuinfo")
    return path.read_text().splitlines() if path.exists() else []


def _results(plan: SweepPlan, cells: list[Cell], analysis: Analysis, where: str) -> dict[str, object]:
    return {
        "machine": where,
        "plan": asdict(plan) | {"modes": [m.value for m in plan.modes], "drafting": [d.value for d in plan.drafting]},
        "cells": [cell.as_dict() | {"predicted_tokens_per_s": analysis.prediction(cell)} for cell in cells],
        "calibration": {k: asdict(timing) for k, timing in analysis.timings.items()},
        "cloud_decode_s": analysis.decode_s,
        "crossover_rtt_ms": analysis.crossover_ms,
    }


def _header(plan: SweepPlan, where: str) -> list[str]:
    link = plan.link
    pinning = "pinned to one core each" if plan.pin else "unpinned"
    return [
        "# Sweep: speculation vs RTT",
        "",
        f"Machine: {where}. Draft {plan.draft}, target {plan.target}; {len(plan.prompts)} chat prompts, "
        f"{plan.max_tokens} tokens each, greedy; cloud and edge {pinning}.",
        f"Link: emulated RTT as listed, jitter {link.jitter_ms} ms, bandwidth "
        f"{link.bandwidth_mbit or 'unlimited'} Mbit/s, loss {link.loss}.",
        "",
    ]


def _table(cells: list[Cell], analysis: Analysis) -> list[str]:
    lines = [
        "## Every cell",
        "",
        "| RTT ms | cell | tok/s | model tok/s | error | TTFT ms | accept rate | mean acc len | cloud fwd/token |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in cells:
        predicted, error = analysis.prediction(cell), analysis.error(cell)
        stats = cell.stats
        lines.append(
            f"| {cell.rtt_ms:g} | {cell.label} "
            f"| {cell.tokens_per_s:.2f} | {_fmt(predicted)} | {_pct(error)} | {cell.ttft_s * 1000:.0f} "
            f"| {_fmt(stats.acceptance_rate)} | {_fmt(stats.mean_acceptance_length)} "
            f"| {_fmt(stats.target_forwards_per_token)} |"
        )
    return [*lines, ""]


def _strategies(rows: list[AtRtt]) -> list[str]:
    """Auto against the best fixed k and the best of spec and cloud; pipelining's gain per k."""
    if not any(row.auto or row.pipelining_gain for row in rows):
        return []
    ks = sorted({k for row in rows for k in row.pipelining_gain})
    lines = [
        "## Drafting strategies",
        "",
        "| RTT ms | best fixed | tok/s | cloud tok/s | auto tok/s | auto vs best fixed | auto vs best of spec, cloud "
        + "".join(f"| pipelined/sync k={k} " for k in ks)
        + "|",
        "|---|---|---|---|---|---|---" + "|---" * len(ks) + "|",
    ]
    for row in rows:
        best, cloud, auto = row.best_fixed, row.cloud, row.auto
        lines.append(
            f"| {row.rtt_ms:g} | {best.label if best else '–'} | {_rate(best)} | {_rate(cloud)} | {_rate(auto)} "
            f"| {_pct(row.auto_against(best))} | {_pct(row.auto_against(row.best_of_spec_and_cloud))} "
            + "".join(f"| {_fmt(row.pipelining_gain.get(k))}x " for k in ks)
            + "|"
        )
    return [*lines, "", _auto_decisions_note(rows), ""]


def _auto_decisions_note(rows: list[AtRtt]) -> str:
    parts = []
    for row in rows:
        if row.auto is not None:
            stats = row.auto.stats
            share = stats.burst_tokens / stats.output_tokens if stats.output_tokens else 0.0
            draft_len = stats.draft_tokens / stats.rounds if stats.rounds else 0.0
            parts.append(f"{row.rtt_ms:g} ms: mean k {draft_len:.1f}, {share:.0%} of tokens in cloud bursts")
    return "Auto's choices (measured requests): " + "; ".join(parts) + "." if parts else ""


def _rate(cell: Cell | None) -> str:
    return "–" if cell is None else f"{cell.tokens_per_s:.2f}"


def _model(analysis: Analysis) -> list[str]:
    lines = [
        "## The model",
        "",
        "Spec tokens/s = E[N] / (k·t_draft + RTT + overhead + t_verify), E[N] = (1−α^(k+1))/(1−α). For each k,",
        "α comes from the tokens committed per round and each time from every cell of that k, combined by the",
        "median over RTTs (no component depends on the RTT); each cell is then predicted from its RTT alone.",
        "Cloud mode streams, so the RTT costs once per request: tokens/s = N / (N·t_decode + RTT).",
        f"The model covers synchronous rounds ({Drafting.SYNC.value}); pipelined and auto cells are measured only.",
        "",
        "| k | α | k·t_draft ms | t_verify ms | overhead ms | crossover RTT ms |",
        "|---|---|---|---|---|---|",
    ]
    for k, t in sorted(analysis.timings.items()):
        crossover = t.crossover_rtt_s(analysis.decode_s) * 1000 if analysis.decode_s else None
        lines.append(
            f"| {k} | {t.alpha:.2f} | {t.draft_s * 1000:.1f} | {t.verify_s * 1000:.1f} "
            f"| {t.overhead_s * 1000:.1f} | {_fmt(crossover, 0)} |"
        )
    if analysis.crossover_ms is None:
        verdict = "No crossover computed (the sweep needs spec and cloud cells)."
    elif analysis.crossover_ms <= 0:
        verdict = "Speculation loses to cloud decoding at every RTT on this setup (crossover ≤ 0 ms)."
    else:
        verdict = (
            f"**Crossover: above an RTT of about {analysis.crossover_ms:.0f} ms no draft length beats cloud decoding.**"
        )
    return [*lines, "", verdict, ""]


def _figures(plots: list[Path]) -> list[str]:
    return [f"![{plot.stem.replace('_', ' ')}]({plot.name})" for plot in plots]


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:+.0%}"
