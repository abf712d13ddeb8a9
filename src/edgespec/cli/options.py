"""Option groups several commands share, and the config objects they build."""

from __future__ import annotations

import argparse

from edgespec.config import (
    ENGINES,
    LinkConfig,
    LinkEmulation,
    ModelConfig,
    SamplingParams,
    auth_token_from_env,
)


def model_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--model", required=required, help="HF folder, .gguf file, or alias (demo-draft, demo-target)")
    parser.add_argument("--cpus", help="pin the process to these cores, e.g. 0 or 2-3 (default: all)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when present)")
    parser.add_argument(
        "--dtype", choices=["float32", "bfloat16", "float16"], help="default: bf16 on CUDA, fp32 on CPU"
    )
    parser.add_argument("--threads", type=int, help="CPU threads for the model (default: torch's choice)")
    parser.add_argument(
        "--engine", choices=ENGINES, default="auto",
        help="torch (exact; HF folders, GGUF, GPUs) or llamacpp (GGUF on CPUs, fast); auto: llamacpp for "
        "GGUF on a CPU when installed",
    )  # fmt: skip


def model_config(args: argparse.Namespace) -> ModelConfig:
    return ModelConfig(args.model, device=args.device, dtype=args.dtype, threads=args.threads, engine=args.engine)


def sampling_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--seed", type=int, help="makes sampled output reproducible")


def sampling_params(args: argparse.Namespace) -> SamplingParams:
    return SamplingParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, seed=args.seed)


def link_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("link emulation", "a slower network, applied to every frame both ways")
    group.add_argument("--link-rtt-ms", type=float, default=0.0, help="added round-trip time")
    group.add_argument("--link-jitter-ms", type=float, default=0.0, help="standard deviation of the added RTT")
    group.add_argument("--link-bandwidth-mbit", type=float, help="serialisation rate each way (default: unlimited)")
    group.add_argument("--link-loss", type=float, default=0.0, help="share of frames delayed by a retransmission")
    group.add_argument("--link-seed", type=int, default=0, help="seed of the emulation's randomness")
    parser.add_argument("--tls-ca", help="connect to the cloud over TLS, trusting this CA (PEM) file")
    parser.add_argument(
        "--keepalive",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="ping the cloud this often; a pong overdue by as long drops and re-dials the link (default 5)",
    )


def link_config(args: argparse.Namespace) -> list[LinkConfig]:
    """One LinkConfig per cloud in --cloud (comma-separated), the other link flags shared."""
    emulation = LinkEmulation(
        rtt_ms=args.link_rtt_ms,
        jitter_ms=args.link_jitter_ms,
        bandwidth_mbit=args.link_bandwidth_mbit,
        loss=args.link_loss,
        seed=args.link_seed,
    )
    token = auth_token_from_env(args.auth_token)
    options = {"emulation": emulation, "tls_ca": args.tls_ca, "keepalive_s": args.keepalive}
    addresses = [address.strip() for address in args.cloud.split(",")]
    if len(set(addresses)) != len(addresses):
        raise ValueError(f"--cloud: each cloud address may be given once, got {args.cloud!r}")
    return [LinkConfig.parse(address, token, **options) for address in addresses]
