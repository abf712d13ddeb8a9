"""`edgespec cloud | demo | generate | models | bench`. Options map one to one onto the config
dataclasses, which validate them; errors print one line, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable

from edgespec.config import (
    DEFAULT_CLOUD_PORT,
    CloudConfig,
    Limits,
    LinkConfig,
    Mode,
    ModelConfig,
    SamplingParams,
    SpecConfig,
    auth_token_from_env,
)

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
    _add(commands, "generate", "generate once from the command line (edge side)", _generate_args, _run_generate)
    _add(commands, "demo", "cloud + edge on loopback, all three modes, measured", _demo_args, _run_demo)
    _add(commands, "models", "list, fetch or convert models", _models_args, _run_models)
    _add(commands, "bench", "benchmarks that print figures", _bench_args, _run_bench)
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


def _model_args(parser: argparse.ArgumentParser, flag: str = "--model") -> None:
    parser.add_argument(flag, required=True, help="HF folder, .gguf file, or alias (demo-draft, demo-target)")
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
    )
    asyncio.run(serve(config))


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


def _run_generate(args: argparse.Namespace) -> None:
    from edgespec.edge.generate_once import GenerateOptions, generate_once

    mode = Mode(args.mode)
    link = None if mode is Mode.EDGE else LinkConfig.parse(args.cloud, auth_token_from_env(args.auth_token))
    options = GenerateOptions(
        model=_model_config(args),
        link=link,
        spec=SpecConfig(num_speculative_tokens=args.num_speculative_tokens),
        mode=mode,
        prompt=args.prompt,
        chat=args.chat,
        max_tokens=args.max_tokens,
        ignore_eos=args.ignore_eos,
        sampling=_sampling(args),
        print_stats=args.stats,
    )
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
