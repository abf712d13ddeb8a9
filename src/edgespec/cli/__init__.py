"""`edgespec cloud | edge | generate | demo | models | bench | netem`. Options map one to one onto
the config dataclasses, which validate them; errors print one line, never a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from edgespec.cli import serving, tools

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
    _add(commands, "cloud", "serve a target model to edges over TCP", serving.cloud_args, serving.run_cloud)
    _add(
        commands,
        "edge",
        "serve the OpenAI-compatible API (drafts here, verifies in the cloud)",
        serving.edge_args,
        serving.run_edge,
    )
    _add(
        commands, "generate", "generate once from the command line (edge side)", tools.generate_args, tools.run_generate
    )
    _add(commands, "demo", "cloud + edge on loopback, all four modes, measured", tools.demo_args, tools.run_demo)
    _add(commands, "models", "list, fetch or convert models", tools.models_args, tools.run_models)
    _add(commands, "bench", "benchmarks that print figures", tools.bench_args, tools.run_bench)
    _add(
        commands,
        "netem",
        "a shaped kernel network path to a cloud in a namespace (root)",
        tools.netem_args,
        tools.run_netem,
    )
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
