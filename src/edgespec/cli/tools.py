"""`edgespec generate | demo | models | bench | netem`: one-off runs, models and measurements."""

from __future__ import annotations

import argparse
import asyncio

from edgespec.cli.options import link_args, link_config, model_args, model_config, sampling_args, sampling_params
from edgespec.config import (
    DEFAULT_CLOUD_PORT,
    EdgePolicy,
    Mode,
    SpecConfig,
)
from edgespec.cpus import pin

# --- generate ----------------------------------------------------------------------------------


def generate_args(parser: argparse.ArgumentParser) -> None:
    model_args(parser)
    parser.add_argument(
        "--cloud",
        default=f"127.0.0.1:{DEFAULT_CLOUD_PORT}",
        help="HOST:PORT of the cloud; several, comma-separated: sessions go to the least loaded",
    )
    parser.add_argument("--auth-token", help="shared secret (or env EDGESPEC_AUTH_TOKEN)")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--chat", action="store_true", help="render the prompt with the target's chat template")
    parser.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.SPEC.value)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--num-speculative-tokens", "-k", type=int, default=SpecConfig().num_speculative_tokens)
    parser.add_argument("--ignore-eos", action="store_true")
    parser.add_argument("--stats", action="store_true", help="print the request's statistics as JSON")
    sampling_args(parser)
    link_args(parser)


def run_generate(args: argparse.Namespace) -> None:
    from edgespec.edge.generate_once import GenerateOptions, generate_once

    mode = Mode(args.mode)
    link = None if mode is Mode.EDGE else link_config(args)
    options = GenerateOptions(
        model=model_config(args),
        link=link,
        policy=EdgePolicy(SpecConfig(num_speculative_tokens=args.num_speculative_tokens), default_mode=mode),
        prompt=args.prompt,
        chat=args.chat,
        max_tokens=args.max_tokens,
        ignore_eos=args.ignore_eos,
        sampling=sampling_params(args),
        print_stats=args.stats,
    )
    pin(args.cpus)
    asyncio.run(generate_once(options))


# --- demo --------------------------------------------------------------------------------------


def demo_args(parser: argparse.ArgumentParser) -> None:
    from edgespec.demo import DemoOptions

    defaults = DemoOptions()
    parser.add_argument("--prompt", default=defaults.prompt)
    parser.add_argument("--max-tokens", type=int, default=defaults.max_tokens)
    parser.add_argument("--num-speculative-tokens", "-k", type=int, default=defaults.num_speculative_tokens)
    parser.add_argument("--draft", default=defaults.draft, help="draft model (default: demo-draft)")
    parser.add_argument("--target", default=defaults.target, help="target model (default: demo-target)")
    sampling_args(parser)


def run_demo(args: argparse.Namespace) -> None:
    from edgespec.demo import DemoOptions, main

    SpecConfig(num_speculative_tokens=args.num_speculative_tokens)  # validates k
    if args.max_tokens < 1:
        raise ValueError(f"--max-tokens must be at least 1, got {args.max_tokens}")
    main(
        DemoOptions(
            prompt=args.prompt,
            max_tokens=args.max_tokens,
            num_speculative_tokens=args.num_speculative_tokens,
            draft=args.draft,
            target=args.target,
            sampling=sampling_params(args),
        )
    )


# --- models ------------------------------------------------------------------------------------


def models_args(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="known aliases and whether they are fetched")
    fetch = actions.add_parser("fetch", help="download, assemble, verify and convert an alias")
    fetch.add_argument("alias")
    convert = actions.add_parser("convert", help="convert a GGUF file once into an HF folder that loads fast")
    convert.add_argument("gguf")
    convert.add_argument("out_dir")


def run_models(args: argparse.Namespace) -> None:
    from pathlib import Path

    from edgespec.engine.fetch import ensure_converted, is_converted
    from edgespec.engine.registry import ALIASES, TINY_ALIASES

    if args.action == "list":
        for alias, model in ALIASES.items():
            state = "ready" if is_converted(model) else "not fetched"
            print(f"{alias:12} {state:12} {model.description}")
        for alias in TINY_ALIASES:
            print(f"{alias:12} {'on use':12} random weights, built in seconds: smoke and load tests only")
    elif args.action == "fetch":
        if args.alias not in ALIASES:
            raise ValueError(f"unknown alias {args.alias!r}; known: {', '.join(ALIASES)}")
        print(ensure_converted(ALIASES[args.alias]))
    else:
        from edgespec.engine.convert import convert_gguf

        print(convert_gguf(Path(args.gguf), Path(args.out_dir)))


# --- bench -------------------------------------------------------------------------------------


def bench_args(parser: argparse.ArgumentParser) -> None:
    from edgespec.bench.cli import add_bench_args

    add_bench_args(parser)


def run_bench(args: argparse.Namespace) -> None:
    from edgespec.bench.cli import run_bench

    run_bench(args)


# --- netem -------------------------------------------------------------------------------------


def netem_args(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    up = actions.add_parser("up", help="create the namespace, veth pair and tc netem shaping")
    up.add_argument("--rtt-ms", type=float, default=0.0)
    up.add_argument("--jitter-ms", type=float, default=0.0)
    up.add_argument("--rate-mbit", type=float, help="each direction (default: unlimited)")
    up.add_argument("--loss-percent", type=float, default=0.0, help="each direction")
    actions.add_parser("down", help="remove them")
    cut = actions.add_parser("cut", help="take the path down for a while, then restore it (a fault drill)")
    cut.add_argument("seconds", type=float)
    actions.add_parser("status", help="whether the namespace exists")


def run_netem(args: argparse.Namespace) -> None:
    from edgespec import netem

    if args.action == "up":
        address = netem.up(netem.Shaping(args.rtt_ms, args.jitter_ms, args.rate_mbit, args.loss_percent))
        print(f"cloud namespace {netem.NAMESPACE} up; start the cloud inside it and point the edge at {address}:")
        print(f"  ip netns exec {netem.NAMESPACE} edgespec cloud --model demo-target --host {address} --auth-token T")
        print(f"  edgespec edge --model demo-draft --cloud {address}:{DEFAULT_CLOUD_PORT} --auth-token T")
    elif args.action == "cut":
        print(f"path to {netem.CLOUD_ADDRESS} cut for {args.seconds:g} s", flush=True)
        netem.cut(args.seconds)
        print("path restored")
    elif args.action == "down":
        netem.down()
        print(f"namespace {netem.NAMESPACE} removed")
    else:
        print("up" if netem.is_up() else "down")
