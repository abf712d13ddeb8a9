"""`edgespec cloud` and `edgespec edge`: the two halves of a deployment."""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import replace

from edgespec import event_loop
from edgespec.cli.options import link_args, link_config, model_args, model_config
from edgespec.config import (
    AUTO,
    DEFAULT_BATCH_WINDOW_S,
    DEFAULT_CLOUD_PORT,
    DEFAULT_EDGE_PORT,
    ApiConfig,
    CloudConfig,
    EdgePolicy,
    Limits,
    LossPolicy,
    Mode,
    ModelConfig,
    SpecConfig,
    api_key_from_env,
    auth_token_from_env,
)
from edgespec.cpus import pin

# --- cloud -------------------------------------------------------------------------------------


def cloud_args(parser: argparse.ArgumentParser) -> None:
    model_args(parser)
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
    parser.add_argument(
        "--synthetic-acceptance", type=float, metavar="ALPHA",
        help="benchmarks only: accept each drafted token with probability ALPHA; the output is NOT the target's",
    )  # fmt: skip
    parser.add_argument("--tls-cert", help="serve the edge link over TLS with this certificate (PEM)")
    parser.add_argument("--tls-key", help="the certificate's private key (PEM)")
    parser.add_argument(
        "--tensor-parallel-size", type=int, default=1, metavar="N",
        help="split the target over N ranks (one per GPU; gloo ranks on a CPU); static engine",
    )  # fmt: skip
    parser.add_argument(
        "--batch-window-ms", type=float, default=DEFAULT_BATCH_WINDOW_S * 1000, metavar="MS",
        help="longest a session's round waits for other sessions' rounds to share its forward pass "
        "(sessions that usually come back sooner end the wait sooner)",
    )  # fmt: skip


def run_cloud(args: argparse.Namespace) -> None:
    from edgespec.cloud.launch import serve

    config = CloudConfig(
        model=model_config(args),
        host=args.host,
        port=args.port,
        auth_token=auth_token_from_env(args.auth_token),
        insecure_no_auth=args.insecure_no_auth,
        limits=Limits(max_sessions=args.max_sessions, max_context=args.max_context, max_k=args.max_k),
        session_idle_timeout_s=args.session_idle_timeout,
        metrics_port=args.metrics_port,
        draft=replace(model_config(args), name=args.draft_model) if args.draft_model else None,
        synthetic_acceptance=args.synthetic_acceptance,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tensor_parallel_size=args.tensor_parallel_size,
        batch_window_s=args.batch_window_ms / 1000,
    )
    pin(args.cpus)
    event_loop.run(serve(config))


# --- edge --------------------------------------------------------------------------------------


def edge_args(parser: argparse.ArgumentParser) -> None:
    model_args(parser, required=False)
    parser.add_argument(
        "--cloud",
        default=f"127.0.0.1:{DEFAULT_CLOUD_PORT}",
        help="HOST:PORT of the cloud; several, comma-separated: sessions go to the least loaded",
    )
    parser.add_argument("--auth-token", help="shared secret for the cloud link (or env EDGESPEC_AUTH_TOKEN)")
    parser.add_argument("--host", default="127.0.0.1", help="address of the HTTP API (default: loopback only)")
    parser.add_argument("--port", type=int, default=DEFAULT_EDGE_PORT, help="port of the HTTP API (0 picks one)")
    parser.add_argument("--served-model-name", help="the model name clients send (default: --model as given)")
    parser.add_argument("--api-key", help="clients must send 'Authorization: Bearer KEY' (or env EDGESPEC_API_KEY)")
    parser.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.SPEC.value, help="default mode")
    parser.add_argument(
        "--num-speculative-tokens",
        "-k",
        help="draft length (default 4), or 'auto': chosen each round from the link and the models",
    )
    parser.add_argument(
        "--pipeline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="draft the next block while the current one is verified (default: on)",
    )
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
    link_args(parser)


def run_edge(args: argparse.Namespace) -> None:
    from edgespec.api.server import EdgeServerConfig, serve

    model, k = draft_and_k(args)
    mode = Mode(args.mode)
    link = None if mode is Mode.EDGE else link_config(args)
    config = EdgeServerConfig(
        model=ModelConfig(model, device=args.device, dtype=args.dtype, threads=args.threads, engine=args.engine),
        link=link,
        policy=EdgePolicy(
            spec_config(k, args.pipeline),
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


def spec_config(k: int | str, pipeline: bool) -> SpecConfig:
    if k == AUTO:
        return SpecConfig(adaptive=True, pipeline=pipeline)
    return SpecConfig(num_speculative_tokens=int(k), pipeline=pipeline)


def draft_and_k(args: argparse.Namespace) -> tuple[str, int | str]:
    """The draft model and k from --model/-k, or from a vLLM-style --speculative-config."""
    model, k = args.model, _draft_length(args.num_speculative_tokens)
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
    if k is not None and not isinstance(k, int) and k != AUTO:
        raise ValueError(f"num_speculative_tokens must be an integer or 'auto', got {k!r}")
    return str(model), SpecConfig().num_speculative_tokens if k is None else k


def _draft_length(flag: str | None) -> int | str | None:
    """-k as given: a number of tokens, "auto", or absent."""
    if flag is None or flag == AUTO:
        return flag
    try:
        return int(flag)
    except ValueError:
        raise ValueError(f"num_speculative_tokens must be an integer or 'auto', got {flag!r}") from None
