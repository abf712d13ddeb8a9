"""`edgespec bench load` on the command line: the run's phases, its report, and an exit status
that fails the run when a check fails (so CI and scripts can gate on it)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgespec.bench.load import LoadPlan


def add_load_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--edges", type=int, default=1, help="edge processes against the one cloud")
    parser.add_argument("--concurrency", type=int, default=64, help="streaming clients in all, spread over the edges")
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of load after the warm-up")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds of full load before the baseline")
    parser.add_argument("--target", default="tiny-target", help="the cloud's model (default: random tiny weights)")
    parser.add_argument("--draft", default="tiny-draft", help="the edges' model")
    parser.add_argument("--input-len", type=int, default=32, help="prompt tokens (±25%%)")
    parser.add_argument("--output-len", type=int, default=64, help="output tokens (±25%%)")
    parser.add_argument("-k", type=int, default=4, help="draft length")
    parser.add_argument("--mode", default="spec", choices=["spec", "cloud", "edge", "colocated"])
    parser.add_argument("--rss-tolerance-mib", type=float, default=32.0, help="allowed memory growth per process")
    parser.add_argument("--out", default="load-results/load.json", help="where to write the JSON report")
    parser.add_argument("--logs", help="keep each process's log in this folder")


def run_load_command(args: argparse.Namespace) -> None:
    from edgespec.bench.load import LoadPlan
    from edgespec.bench.load_report import print_load_report, save_report

    plan = LoadPlan(
        edges=args.edges,
        concurrency=args.concurrency,
        duration_s=args.duration,
        warmup_s=args.warmup,
        target=args.target,
        draft=args.draft,
        prompt_len=args.input_len,
        output_len=args.output_len,
        k=args.k,
        mode=args.mode,
    )
    logs = Path(args.logs) if args.logs else None
    if logs is not None:
        logs.mkdir(parents=True, exist_ok=True)
    report = asyncio.run(_run(plan, logs, args.rss_tolerance_mib))
    print_load_report(report)
    save_report(report, Path(args.out))
    print(f"report written to {args.out}")
    if not report["passed"]:
        sys.exit(1)


async def _run(plan: LoadPlan, logs: Path | None, rss_tolerance_mib: float) -> dict[str, object]:
    from edgespec.bench.load import drive, fleet, load_samples, settle
    from edgespec.bench.load_report import load_report

    samples = load_samples(plan)
    print(f"starting a cloud and {plan.edges} edge(s): {plan.target} / {plan.draft}", flush=True)
    with fleet(plan, logs) as servers:
        warmup = await drive(servers, plan, samples, plan.warmup_s, "warm-up")
        await settle(servers)
        baseline = {server.name: server.rss_mib() for server in servers.servers}
        load = await drive(servers, plan, samples, plan.duration_s, "load")
        open_after = await settle(servers)
        rss = {server.name: (baseline[server.name], server.rss_mib()) for server in servers.servers}
    return load_report(plan, warmup, load, rss, open_after, rss_tolerance_mib)
