"""`edgespec cloud | demo | generate | models | bench`. Options map one to one onto the config
dataclasses, which validate them; errors print one line, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable

from edgespec.config import (
    DEFAULT_CLOUD_PORT,
    DEFAULT_EDGE_PORT,
    ApiConfig,
    CloudConfig,
    EdgePolicy,
    Limits,
    LinkConfig,
    LinkEmulation,
    LossPolicy,
    Mode,
    ModelConfig,
    SamplingParams,
    SpecConfig,
    api_key_from_env,
    auth_token_from_env,
)
from edgespec.cpus import pin

EXIT_USAGE = 2


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if not _is_user_error(exc):
            raise
        print(f"edgespec: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _is_user_error(exc: Exception) -> bool:
    from edgespec.engine.fetch import ModelFetchError
    from edgespec.engine.loading import ModelLoadError
    from edgespec.transport.client import CloudError, LinkError

    return isinstance(exc, ValueError | ModelLoadError | ModelFetchError | LinkError | CloudError | OSError)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgespec", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    _add(commands, "cloud", "serve a target model to edges over TCP", _cloud_args, _run_cloud)
    _add(
        commands,
        "edge",
        "serve the OpenAI-compatible API (drafts here, verifies in the cloud)",
        _edge_args,
        _run_edge,
    )
    _add(commands, "generate", "generate once from the command line (edge side)", _generate_args, _run_generate)
    _add(commands, "demo", "cloud + edge on loopback, all three modes, measured", _demo_args, _run_demo)
    _add(commands, "models", "list, fetch or convert models", _models_args, _run_models)
    _add(commands, "bench", "benchmarks that print figures", _bench_args, _run_bench)
    _add(commands, "netem", "a shaped kernel network path to a cloud in a namespace (root)", _netem_args, _run_netem)
    return parser


def _add(
    commands: argparse._SubParsersAction,
    name: str,
    help_text: str,
    add_args: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], None],
) -> None:
    sub = commands.add_parser(name, help=help_text, description=help_text)
    add_args(sub)
    sub.set_defaults(run=run)


# --- shared option groups ----------------------------------------------------------------------


def _model_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--model", required=required, help="HF folder, .gguf file, or alias (demo-draft, demo-target)")
    parser.add_argument("--cpus", help="pin the process to these cores, e.g. 0 or 2-3 (default: all)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when present)")
    parser.add_argument(
        "--dtype", choices=["float32", "bfloat16", "float16"], help="default: bf16 on CUDA, fp32 on CPU"
    )
    parser.add_argument("--threads", type=int, help="CPU threads for the model (default: torch's choice)")


def _model_config(args: argparse.Namespace) -> ModelConfig:
    return ModelConfig(args.model, device=args.device, dtype=args.dtype, threads=args.threads)


def _sampling_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--seed", type=int, help="makes sampled output reproducible")


def _sampling(args: argparse.Namespace) -> SamplingParams:
    return SamplingParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, seed=args.seed)


def _link_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("link emulation", "a slower network, applied to every frame both ways")
    group.add_argument("--link-rtt-ms", type=float, default=0.0, help="added round-trip time")
    group.add_argument("--link-jitter-ms", type=float, default=0.0, help="standard deviation of the added RTT")
    group.add_argument("--link-bandwidth-mbit", type=float, help="serialisation rate each way (default: unlimited)")
    group.add_argument("--link-loss", type=float, default=0.0, help="share of frames delayed by a retransmission")
    group.add_argument("--link-seed", type=int, default=0, help="seed of the emulation's randomness")


def _link(args: argparse.Namespace) -> LinkConfig:
    emulation = LinkEmulation(
        rtt_ms=args.link_rtt_ms,
        jitter_ms=args.link_jitter_ms,
        bandwidth_mbit=args.link_bandwidth_mbit,
        loss=args.link_loss,
        seed=args.link_seed,
    )
    return LinkConfig.parse(args.cloud, auth_token_from_env(args.auth_token), emulation)


# --- cloud -------------------------------------------------------------------------------------


def _cloud_args(parser: argparse.ArgumentParser) -> None:
    _model_args(parser)
    limits = Limits()
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=DEFAULT_CLOUD_PORT, help="0 picks a free port")
    parser.add_argument("--auth-token", help="shared secret edges must prove (or env EDGESPEC_AUTH_TOKEN)")
    parser.add_argument("--insecure-no-auth", action="store_true", help="allow a non-loopback address without a token")
    parser.add_argument("--max-sessions", type=int, default=limits.max_sessions)
    parser.add_argument("--max-context", type=int, default=limits.max_context, help="capped by the model's own")
    parser.add_argument("--max-k", type=int, default=limits.max_k, help="largest draft block accepted")
    parser.add_argument("--session-idle-timeout", type=float, default=300.0, help="seconds before an idle session ends")
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port (0 picks one)")
    parser.add_argument("--draft-model", help="also load this draft, for co-located speculation (mode colocated)")


def _run_cloud(args: argparse.Namespace) -> None:
    from edgespec.cloud.launch import serve

    config = CloudConfig(
        model=_model_config(args),
        host=args.host,
        port=args.port,
        auth_token=auth_token_from_env(args.auth_token),
        insecure_no_auth=args.insecure_no_auth,
        limits=Limits(max_sessions=args.max_sessions, max_context=args.max_context, max_k=args.max_k),
        session_idle_timeout_s=args.session_idle_timeout,
        metrics_port=args.metrics_port,
        draft=ModelConfig(args.draft_model, args.device, args.dtype, args.threads) if args.draft_model else None,
    )
    pin(args.cpus)
    asyncio.run(serve(config))


# --- edge --------------------------------------------------------------------------------------


def _edge_args(parser: argparse.ArgumentParser) -> None:
    _model_args(parser, required=False)
    parser.add_argument("--cloud", default=f"127.0.0.1:{DEFAULT_CLOUD_PORT}", help="HOST:PORT of the cloud")
    parser.add_argument("--auth-token", help="shared secret for the cloud link (or env EDGESPEC_AUTH_TOKEN)")
    parser.add_argument("--host", default="127.0.0.1", help="address of the HTTP API (default: loopback only)")
    parser.add_argument("--port", type=int, default=DEFAULT_EDGE_PORT, help="port of the HTTP API (0 picks one)")
    parser.add_argument("--served-model-name", help="the model name clients send (default: --model as given)")
    parser.add_argument("--api-key", help="clients must send 'Authorization: Bearer KEY' (or env EDGESPEC_API_KEY)")
    parser.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.SPEC.value, help="default mode")
    parser.add_argument("--num-speculative-tokens", "-k", type=int, help="draft length (default 4)")
    parser.add_argument(
        "--speculative-config",
        help='vLLM-style JSON, e.g. \'{"model": "demo-draft", "num_speculative_tokens": 3}\'',
    )
    parser.add_argument(
        "--on-cloud-loss",
        choices=[p.value for p in LossPolicy],
        default=LossPolicy.WAIT.value,
        help="while the cloud is unreachable: wait for it, draft alone (output marked), or fail with 503",
    )
    parser.add_argument("--cloud-wait-timeout", type=float, default=30.0, help="seconds 'wait' holds a request")
    _link_args(parser)


def _run_edge(args: argparse.Namespace) -> None:
    from edgespec.api.server import EdgeServerConfig, serve

    model, k = _draft_and_k(args)
    mode = Mode(args.mode)
    link = None if mode is Mode.EDGE else _link(args)
    config = EdgeServerConfig(
        model=ModelConfig(model, device=args.device, dtype=args.dtype, threads=args.threads),
        link=link,
        policy=EdgePolicy(
            SpecConfig(num_speculative_tokens=k),
            default_mode=mode,
            on_cloud_loss=LossPolicy(args.on_cloud_loss),
            cloud_wait_timeout_s=args.cloud_wait_timeout,
        ),
        api=ApiConfig(
            host=args.host,
            port=args.port,
            served_model_name=args.served_model_name,
            api_key=api_key_from_env(args.api_key),
        ),
    )
    pin(args.cpus)
    asyncio.run(serve(config))


def _draft_and_k(args: argparse.Namespace) -> tuple[str, int]:
    """The draft model and k from --model/-k, or from a vLLM-style --speculative-config."""
    model, k = args.model, args.num_speculative_tokens
    if args.speculative_config is not None:
        try:
            spec = json.loads(args.speculative_config)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--speculative-config is not valid JSON: {exc}") from None
        if not isinstance(spec, dict):
            raise ValueError("--speculative-config must be a JSON object")
        unknown = set(spec) - {"model", "num_speculative_tokens", "remote_target", "method"}
        if unknown:
            raise ValueError(f"--speculative-config has unsupported keys: {', '.join(sorted(unknown))}")
        model = model or spec.get("model")
        k = k if k is not None else spec.get("num_speculative_tokens")
    if not model:
        raise ValueError("a draft model is required: --model PATH_OR_ALIAS (or a model in --speculative-config)")
    if k is not None and not isinstance(k, int):
        raise ValueError(f"num_speculative_tokens must be an integer, got {k!r}")
    return str(model), SpecConfig().num_speculative_tokens if k is None else k


# --- generate ----------------------------------------------------------------------------------


def _generate_args(parser: argparse.ArgumentParser) -> None:
    _model_args(parser)
    parser.add_argument("--cloud", default=f"127.0.0.1:{DEFAULT_CLOUD_PORT}", help="HOST:PORT of the cloud")
    parser.add_argument("--auth-token", help="shared secret (or env EDGESPEC_AUTH_TOKEN)")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--chat", action="store_true", help="render the prompt with the target's chat template")
    parser.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.SPEC.value)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--num-speculative-tokens", "-k", type=int, default=SpecConfig().num_speculative_tokens)
    parser.add_argument("--ignore-eos", action="store_true")
    parser.add_argument("--stats", action="store_true", help="print the request's statistics as JSON")
    _sampling_args(parser)
    _link_args(parser)


def _run_generate(args: argparse.Namespace) -> None:
    from edgespec.edge.generate_once import GenerateOptions, generate_once

    mode = Mode(args.mode)
    link = None if mode is Mode.EDGE else _link(args)
    options = GenerateOptions(
        model=_model_config(args),
        link=link,
        policy=EdgePolicy(SpecConfig(num_speculative_tokens=args.num_speculative_tokens), default_mode=mode),
        prompt=args.prompt,
        chat=args.chat,
        max_tokens=args.max_tokens,
        ignore_eos=args.ignore_eos,
        sampling=_sampling(args),
        print_stats=args.stats,
    )
    pin(args.cpus)
    asyncio.run(generate_once(options))


# --- demo --------------------------------------------------------------------------------------


def _demo_args(parser: argparse.ArgumentParser) -> None:
    from edgespec.demo import DemoOptions

    defaults = DemoOptions()
    parser.add_argument("--prompt", default=defaults.prompt)
    parser.add_argument("--max-tokens", type=int, default=defaults.max_tokens)
    parser.add_argument("--num-speculative-tokens", "-k", type=int, default=defaults.num_speculative_tokens)
    parser.add_argument("--draft", default=defaults.draft, help="draft model (default: demo-draft)")
    parser.add_argument("--target", default=defaults.target, help="target model (default: demo-target)")
    _sampling_args(parser)


def _run_demo(args: argparse.Namespace) -> None:
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
            sampling=_sampling(args),
        )
    )


# --- models ------------------------------------------------------------------------------------


def _models_args(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="known aliases and whether they are fetched")
    fetch = actions.add_parser("fetch", help="download, assemble, verify and convert an alias")
    fetch.add_argument("alias")
    convert = actions.add_parser("convert", help="convert a GGUF file once into an HF folder that loads fast")
    convert.add_argument("gguf")
    convert.add_argument("out_dir")


def _run_models(args: argparse.Namespace) -> None:
    from pathlib import Path

    from edgespec.engine.fetch import ensure_converted, is_converted
    from edgespec.engine.registry import ALIASES

    if args.action == "list":
        for alias, model in ALIASES.items():
            state = "ready" if is_converted(model) else "not fetched"
            print(f"{alias:12} {state:12} {model.description}")
    elif args.action == "fetch":
        if args.alias not in ALIASES:
            raise ValueError(f"unknown alias {args.alias!r}; known: {', '.join(ALIASES)}")
        print(ensure_converted(ALIASES[args.alias]))
    else:
        from edgespec.engine.convert import convert_gguf

        print(convert_gguf(Path(args.gguf), Path(args.out_dir)))


# --- bench -------------------------------------------------------------------------------------


def _bench_args(parser: argparse.ArgumentParser) -> None:
    from edgespec.bench.cli import add_bench_args

    add_bench_args(parser)


def _run_bench(args: argparse.Namespace) -> None:
    from edgespec.bench.cli import run_bench

    run_bench(args)


# --- netem -------------------------------------------------------------------------------------


def _netem_args(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    up = actions.add_parser("up", help="create the namespace, veth pair and tc netem shaping")
    up.add_argument("--rtt-ms", type=float, default=0.0)
    up.add_argument("--jitter-ms", type=float, default=0.0)
    up.add_argument("--rate-mbit", type=float, help="each direction (default: unlimited)")
    up.add_argument("--loss-percent", type=float, default=0.0, help="each direction")
    actions.add_parser("down", help="remove them")
    actions.add_parser("status", help="whether the namespace exists")


def _run_netem(args: argparse.Namespace) -> None:
    from edgespec import netem

    if args.action == "up":
        address = netem.up(netem.Shaping(args.rtt_ms, args.jitter_ms, args.rate_mbit, args.loss_percent))
        print(f"cloud namespace {netem.NAMESPACE} up; start the cloud inside it and point the edge at {address}:")
        print(f"  ip netns exec {netem.NAMESPACE} edgespec cloud --model demo-target --host {address} --auth-token T")
        print(f"  edgespec edge --model demo-draft --cloud {address}:{DEFAULT_CLOUD_PORT} --auth-token T")
    elif args.action == "down":
        netem.down()
        print(f"namespace {netem.NAMESPACE} removed")
    else:
        print("up" if netem.is_up() else "down")
