"""Configuration: one source of truth for every knob, validated where it is built.

`SamplingParams` and `Limits` travel on the wire, so they are msgspec structs; the rest are
frozen dataclasses. Every validation failure raises `ValueError` with a message naming the field.
"""

from __future__ import annotations

import enum
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec

DEFAULT_CLOUD_PORT = 8083
# Each server prints one line starting so once it listens (processes.py waits for it).
CLOUD_READY_LINE = "edgespec cloud ready"
EDGE_READY_LINE = "edgespec edge ready"
DEFAULT_EDGE_PORT = 8082
AUTH_TOKEN_ENV = "EDGESPEC_AUTH_TOKEN"
API_KEY_ENV = "EDGESPEC_API_KEY"
CACHE_DIR_ENV = "EDGESPEC_CACHE"
MAX_SEED = 2**63 - 1

# The longest a round waits for other sessions' rounds to share its forward call; sessions known
# to come back sooner end the wait sooner (cloud/batcher.py)
DEFAULT_BATCH_WINDOW_S = 0.005


class Mode(enum.Enum):
    """How a request is decoded."""

    SPEC = "spec"  # edge drafts, cloud verifies
    CLOUD = "cloud"  # cloud decodes alone and streams tokens (the plain-cloud baseline)
    EDGE = "edge"  # draft model alone, no cloud
    COLOCATED = "colocated"  # both models in the cloud, which speculates alone; the edge relays


class SamplingParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How tokens are chosen from the target's logits. temperature 0 means greedy."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.temperature <= 100.0:
            raise ValueError(f"temperature must be in [0, 100], got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be at least 1 when given, got {self.top_k}")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be in [0, 2**63), got {self.seed}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1


class Limits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a cloud accepts; sent to the edge in the handshake."""

    max_k: int = 16
    max_sessions: int = 256
    max_context: int = 4096
    max_frame_bytes: int = 4 * 1024 * 1024
    max_draft_support: int = 256
    max_logprobs: int = 20  # top tokens reported per position, as OpenAI allows
    vocab_size: int = 0
    colocated: bool = False  # the cloud holds a draft model and can speculate on its own

    def __post_init__(self) -> None:
        for name in ("max_k", "max_sessions", "max_context", "max_frame_bytes", "max_draft_support", "max_logprobs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


ENGINES = ("auto", "torch", "static", "llamacpp")


@dataclass(frozen=True)
class ModelConfig:
    """Which model to load and where it runs. `name` is a path (HF folder or .gguf) or an alias."""

    name: str
    device: str | None = None  # None: CUDA when present, else CPU
    dtype: str | None = None  # None: bfloat16 on CUDA, float32 on CPU
    threads: int | None = None  # compute threads; None: torch's default, or every allowed core for llama.cpp
    engine: str = "auto"  # torch | static | llamacpp | auto (engine/backends.py says which it picks)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a model path or alias is required")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.dtype not in (None, "float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")


AUTO: Final = "auto"  # as a draft length: chosen round by round (edge/controller.py)


@dataclass(frozen=True)
class SpecConfig:
    """Speculation knobs on the edge."""

    num_speculative_tokens: int = 4  # the draft length; with `adaptive`, the first round's
    adaptive: bool = False  # `--num-speculative-tokens auto`: the controller picks k (or cloud decoding) each round
    max_adaptive_k: int = 8
    pipeline: bool = True  # draft the next block while the current one is being verified
    draft_support: int = 64  # largest support of a sampled draft distribution sent uplink

    def __post_init__(self) -> None:
        if not 0 <= self.num_speculative_tokens <= 64:
            raise ValueError(f"num_speculative_tokens must be in [0, 64], got {self.num_speculative_tokens}")
        if not 1 <= self.max_adaptive_k <= 64:
            raise ValueError(f"max_adaptive_k must be in [1, 64], got {self.max_adaptive_k}")
        if not 1 <= self.draft_support <= 4096:
            raise ValueError(f"draft_support must be in [1, 4096], got {self.draft_support}")


class LossPolicy(enum.Enum):
    """What a request does while the cloud link is down."""

    WAIT = "wait"  # hold the request until the link is back (bounded), then continue exactly
    DRAFT = "draft"  # keep going with the draft model alone; the output is marked as no longer the target's
    FAIL = "fail"  # answer 503 at once


@dataclass(frozen=True)
class EdgePolicy:
    """How the edge decodes requests by default and rides out a lost cloud link."""

    spec: SpecConfig = field(default_factory=SpecConfig)
    default_mode: Mode = Mode.SPEC
    on_cloud_loss: LossPolicy = LossPolicy.WAIT
    cloud_wait_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.cloud_wait_timeout_s < 0:
            raise ValueError(f"cloud_wait_timeout_s must not be negative, got {self.cloud_wait_timeout_s}")


@dataclass(frozen=True)
class ApiConfig:
    """The edge's HTTP API."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_EDGE_PORT
    served_model_name: str | None = None  # None: the model argument as given
    api_key: str | None = None  # None: no key needed

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")


@dataclass(frozen=True)
class ConnectionGuards:
    """How the cloud protects itself from connections that misbehave."""

    max_pending_handshakes: int = 256  # connections not yet authenticated, in all
    max_pending_per_address: int = 16  # ... and from any one address
    max_unsent_bytes: int = 8 * 1024 * 1024  # an edge that lets this much pile up is not reading
    send_timeout_s: float = 30.0  # ... nor is one whose socket stays full this long

    def __post_init__(self) -> None:
        if min(self.max_pending_handshakes, self.max_pending_per_address, self.max_unsent_bytes) < 1:
            raise ValueError("connection guard limits must be positive")
        if self.send_timeout_s <= 0:
            raise ValueError("the send timeout must be positive")


@dataclass(frozen=True)
class CloudConfig:
    """The cloud server: where it listens, who may connect and what it allows."""

    model: ModelConfig
    host: str = "127.0.0.1"
    port: int = DEFAULT_CLOUD_PORT
    auth_token: str | None = None
    insecure_no_auth: bool = False
    limits: Limits = field(default_factory=Limits)
    session_idle_timeout_s: float = 300.0
    handshake_timeout_s: float = 10.0
    guards: ConnectionGuards = field(default_factory=ConnectionGuards)
    metrics_port: int | None = None  # serve Prometheus text on this port (same host); None: no metrics
    draft: ModelConfig | None = None  # a draft model of its own, for co-located speculation
    synthetic_acceptance: float | None = None  # benchmarks only: accept drafted tokens with this probability
    tls_cert: str | None = None  # serve the edge link over TLS with this certificate ...
    tls_key: str | None = None  # ... and its private key
    tensor_parallel_size: int = 1  # ranks the target is split over (engine/tensor_parallel.py)
    batch_window_s: float = DEFAULT_BATCH_WINDOW_S

    def __post_init__(self) -> None:
        if not 0 <= self.batch_window_s <= 1:
            raise ValueError(f"batch window must be in [0, 1000] ms, got {self.batch_window_s * 1000:g}")
        if not 1 <= self.tensor_parallel_size <= 64:
            raise ValueError(f"tensor parallel size must be in [1, 64], got {self.tensor_parallel_size}")
        if self.tensor_parallel_size > 1 and self.model.engine not in ("static", "auto"):
            raise ValueError("tensor parallelism runs on the static engine: use --engine static (or auto on CUDA)")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both --tls-cert and --tls-key")
        _require_files(self.tls_cert, self.tls_key)
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics port must be in [0, 65535], got {self.metrics_port}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        if self.session_idle_timeout_s <= 0 or self.handshake_timeout_s <= 0:
            raise ValueError("timeouts must be positive")
        if self.synthetic_acceptance is not None and not 0.0 <= self.synthetic_acceptance <= 1.0:
            raise ValueError(f"synthetic acceptance must be in [0, 1], got {self.synthetic_acceptance}")
        if not self.auth_token and not self.insecure_no_auth and not is_loopback(self.host):
            raise ValueError(
                f"refusing to listen on {self.host} without an auth token: pass --auth-token "
                f"(or set {AUTH_TOKEN_ENV}), or --insecure-no-auth if the network is trusted"
            )


@dataclass(frozen=True)
class LinkEmulation:
    """A slower network, emulated at the edge on every frame both ways (after the handshake).

    Each direction adds half the RTT, a normal jitter (`jitter_ms` is the RTT's standard
    deviation), serialisation at `bandwidth_mbit`, and, with probability `loss` per frame, one
    retransmission timeout: TCP does not lose data, it delivers it late.
    """

    rtt_ms: float = 0.0
    jitter_ms: float = 0.0
    bandwidth_mbit: float | None = None  # None: unlimited
    loss: float = 0.0
    seed: int = 0
    retunable: bool = False  # emulate even an ideal link, so that it can be retuned mid-run

    def __post_init__(self) -> None:
        if self.rtt_ms < 0 or self.jitter_ms < 0:
            raise ValueError("link RTT and jitter must not be negative")
        if self.bandwidth_mbit is not None and self.bandwidth_mbit <= 0:
            raise ValueError(f"link bandwidth must be positive, got {self.bandwidth_mbit}")
        if not 0.0 <= self.loss < 1.0:
            raise ValueError(f"link loss must be in [0, 1), got {self.loss}")

    @property
    def active(self) -> bool:
        shaped = self.rtt_ms > 0 or self.jitter_ms > 0 or self.bandwidth_mbit is not None or self.loss > 0
        return shaped or self.retunable


@dataclass(frozen=True)
class LinkConfig:
    """How the edge reaches its cloud."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_CLOUD_PORT
    auth_token: str | None = None
    connect_timeout_s: float = 10.0
    reply_timeout_s: float = 120.0
    keepalive_s: float = 5.0  # ping interval; a pong overdue by one interval drops the link
    emulation: LinkEmulation = field(default_factory=LinkEmulation)
    tls_ca: str | None = None  # connect over TLS, trusting this CA file; None: plain TCP

    def __post_init__(self) -> None:
        if not 0 < self.port <= 65535:
            raise ValueError(f"cloud port must be in [1, 65535], got {self.port}")
        if self.keepalive_s <= 0:
            raise ValueError(f"keep-alive interval must be positive, got {self.keepalive_s}")
        _require_files(self.tls_ca)

    @classmethod
    def parse(cls, address: str, auth_token: str | None = None, **options: Any) -> LinkConfig:
        """Build from `HOST:PORT` (IPv6 as `[::1]:PORT`); `options` are further fields."""
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"cloud address must be HOST:PORT, got {address!r}")
        return cls(host=host.strip("[]"), port=int(port), auth_token=auth_token, **options)


def _require_files(*paths: str | None) -> None:
    for path in paths:
        if path is not None and not Path(path).is_file():
            raise ValueError(f"TLS file {path} does not exist")


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cache_dir() -> Path:
    """Where fetched and converted models live (EDGESPEC_CACHE, else ~/.cache/edgespec)."""
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "edgespec")


def auth_token_from_env(explicit: str | None) -> str | None:
    return explicit or os.environ.get(AUTH_TOKEN_ENV) or None


def api_key_from_env(explicit: str | None) -> str | None:
    return explicit or os.environ.get(API_KEY_ENV) or None
