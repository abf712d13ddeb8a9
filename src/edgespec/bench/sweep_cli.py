"""The sweep from the command line: plan from flags, a progress bar, the report at the end."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path

from tqdm import tqdm

from edgespec.bench.analysis import analyse
from edgespec.bench.report import write_report
from edgespec.bench.sweep import BUILT_IN_PROMPTS, Cell, Drafting, SweepPlan, run_sweep
from edgespec.config import LinkEmulation, Mode


def plan_from_args(args: argparse.Namespace) -> SweepPlan:
    if not 1 <= args.prompts <= len(BUILT_IN_PROMPTS):
        raise ValueError(f"--prompts must be in [1, {len(BUILT_IN_PROMPTS)}], got {args.prompts}")
    if args.max_tokens < 2:
        raise ValueError(f"--max-tokens must be at least 2, got {args.max_tokens}")
    plan = SweepPlan(
        rtts_ms=sorted(_numbers(args.rtt_ms, float, "--rtt-ms")),
        ks=_numbers(args.k, int, "--k"),
        modes=[Mode(mode) for mode in args.modes.split(",")],
        drafting=[Drafting(scheme) for scheme in args.drafting.split(",")],
        max_tokens=args.max_tokens,
        prompts=BUILT_IN_PROMPTS[: args.prompts],
        draft=args.draft,
        target=args.target,
        link=LinkEmulation(jitter_ms=args.jitter_ms, bandwidth_mbit=args.bandwidth_mbit, loss=args.loss),
        pin=not args.no_pin and len(os.sched_getaffinity(0)) >= 2,
    )
    if any(rtt < 0 for rtt in plan.rtts_ms) or any(not 0 <= k <= 64 for k in plan.ks):
        raise ValueError("RTTs must not be negative and k must be in [0, 64]")
    return plan


def run_sweep_command(args: argparse.Namespace) -> None:
    if args.report_from:
        rewrite_report(Path(args.report_from))
        return
    plan = plan_from_args(args)
    cells = plan.cells()
    print(f"sweep: {len(cells)} cells, {len(plan.prompts)} prompts × {plan.max_tokens} tokens each", flush=True)
    with tqdm(total=len(cells) * len(plan.prompts), unit="request") as bar:

        def on_request(cell: Cell) -> None:
            bar.set_postfix_str(f"{cell.label} rtt={cell.rtt_ms:g}: {cell.tokens_per_s:.2f} tok/s so far")
            bar.update()

        measured = asyncio.run(run_sweep(plan, on_request))
    report = write_report(plan, measured, analyse(measured), Path(args.out))
    print(f"report: {report}")


def _numbers(text: str, kind: type, flag: str) -> list:
    try:
        return [kind(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"{flag} must be comma-separated numbers, got {text!r}") from None


def rewrite_report(folder: Path) -> None:
    """Analyse a saved sweep again and rewrite its report and plots (no measuring)."""
    try:
        saved = json.loads((folder / "results.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {folder / 'results.json'}: {exc}") from None
    plan = SweepPlan.from_dict(saved["plan"])
    cells = [Cell.from_dict(cell) for cell in saved["cells"]]
    print(f"report: {write_report(plan, cells, analyse(cells), folder, saved.get('machine'))}")
