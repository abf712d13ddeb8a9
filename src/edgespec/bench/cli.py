"""`edgespec bench protocol | pair | engines | verifier | sweep | adapt | serve | load`."""

from __future__ import annotations

import argparse
import asyncio
import importlib

from edgespec.bench.adapt_cli import add_adapt_args
from edgespec.bench.load_cli import add_load_args
from edgespec.bench.serve.cli import add_serve_args


def add_bench_args(parser: argparse.ArgumentParser) -> None:
    kinds = parser.add_subparsers(dest="bench", required=True)
    protocol = kinds.add_parser("protocol", help="verify round trip vs raw TCP ping-pong; bytes per round")
    protocol.add_argument("--rounds", type=int, default=2000)
    protocol.add_argument("-k", type=int, default=4, help="draft length of the measured rounds")
    pair = kinds.add_parser("pair", help="tokens/s and acceptance for k = 1..8 against target and draft alone")
    pair.add_argument("--draft", default="demo-draft")
    pair.add_argument("--target", default="demo-target")
    pair.add_argument("--k", default="1,2,3,4,5,6,7,8", help="comma-separated draft lengths")
    pair.add_argument("--max-tokens", type=int, default=48)
    pair.add_argument("--out", help="also write the results as JSON here")
    engines = kinds.add_parser("engines", help="one model on torch and llama.cpp: load, decode tok/s, m-token cost")
    engines.add_argument("--model", default="demo-draft")
    engines.add_argument("--threads", type=int, default=1, help="compute threads (default 1: one core)")
    engines.add_argument("--tokens", type=int, default=64, help="tokens decoded for the speed figure")
    engines.add_argument("--widths", default="1,2,4,5,8,9", help="new tokens per forward for the cost ratios")
    engines.add_argument("--out", help="also write the figures as JSON here")
    verifier = kinds.add_parser("verifier", help="the GPU verify step against the memory-bandwidth floor")
    _verifier_arguments(verifier)
    capacity = kinds.add_parser("capacity", help="N simulated edges against one GPU cloud: spec vs cloud decoding")
    _capacity_arguments(capacity)
    sweep = kinds.add_parser("sweep", help="modes × k × emulated RTT on real processes; JSON, report, plots")
    sweep.add_argument("--rtt-ms", default="0,10,25,50,100,200", help="comma-separated round-trip times")
    sweep.add_argument("--k", default="1,2,4,8", help="comma-separated draft lengths")
    sweep.add_argument("--modes", default="spec,cloud,edge,colocated", help="comma-separated modes")
    sweep.add_argument(
        "--drafting",
        default="sync,pipelined,auto",
        help="spec mode's drafting schemes, comma-separated: sync, pipelined, auto (the controller picks k)",
    )
    sweep.add_argument("--max-tokens", type=int, default=48)
    sweep.add_argument("--prompts", type=int, default=2, help="how many of the built-in prompts per cell")
    sweep.add_argument("--draft", default="demo-draft")
    sweep.add_argument("--target", default="demo-target")
    sweep.add_argument("--jitter-ms", type=float, default=0.0)
    sweep.add_argument("--bandwidth-mbit", type=float)
    sweep.add_argument("--loss", type=float, default=0.0)
    sweep.add_argument("--no-pin", action="store_true", help="do not pin cloud and edge to one core each")
    sweep.add_argument("--out", default="sweep-results", help="folder for results.json, report.md and plots")
    sweep.add_argument("--report-from", metavar="DIR", help="re-analyse DIR/results.json; rewrite its report and plots")
    adapt = kinds.add_parser("adapt", help="auto's draft length through a step in RTT, against fixed k and cloud")
    add_adapt_args(adapt)
    serve = kinds.add_parser("serve", help="load generator for an OpenAI-compatible server (vllm bench serve's flags)")
    add_serve_args(serve)
    load = kinds.add_parser("load", help="soak test: one cloud, N edges, many streams for minutes; checks leaks")
    add_load_args(load)


# Each benchmark's module is imported only when it runs: some pull in torch, the GPU, or uvicorn.
_RUNNERS = {
    "serve": ("edgespec.bench.serve.cli", "run_serve"),
    "capacity": ("edgespec.bench.capacity", "main"),
    "verifier": ("edgespec.bench.verifier", "main"),
    "load": ("edgespec.bench.load_cli", "run_load_command"),
    "sweep": ("edgespec.bench.sweep_cli", "run_sweep_command"),
    "adapt": ("edgespec.bench.adapt_cli", "run_adapt_command"),
}


def run_bench(args: argparse.Namespace) -> None:
    if args.bench in _RUNNERS:
        module, function = _RUNNERS[args.bench]
        getattr(importlib.import_module(module), function)(args)
    elif args.bench == "protocol":
        from edgespec.bench.protocol_overhead import run

        asyncio.run(run(args.rounds, args.k))
    elif args.bench == "engines":
        _run_engines(args)
    else:
        from edgespec.bench.pair import run as run_pair

        ks = [int(k) for k in args.k.split(",")]
        asyncio.run(run_pair(args.draft, args.target, ks, args.max_tokens, args.out))


def _run_engines(args: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    from edgespec.bench.engines import run

    figures = run(args.model, args.threads, args.tokens, [int(w) for w in args.widths.split(",")])
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")


def _verifier_arguments(parser: argparse.ArgumentParser) -> None:
    from edgespec.bench.verifier import add_arguments  # torch and transformers only: light enough

    add_arguments(parser)


def _capacity_arguments(parser: argparse.ArgumentParser) -> None:
    from edgespec.bench.capacity import add_arguments

    add_arguments(parser)
