"""Building and running a cloud from its configuration."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Coroutine
from typing import Any

import prometheus_client

from edgespec.cloud.colocated import LocalDraft
from edgespec.cloud.server import CloudServer
from edgespec.cloud.verifier import Verifier
from edgespec.config import CLOUD_READY_LINE, CloudConfig, ModelConfig, SpecConfig
from edgespec.engine.backends import open_model, open_parallel
from edgespec.engine.tokenizer import TokenizerInfo

log = logging.getLogger("edgespec.cloud")

READY_LINE = CLOUD_READY_LINE
CLOUD_KV_TOKENS = 16384  # llama.cpp: KV positions all sessions share (torch grows each session's cache)


def build_server(config: CloudConfig) -> CloudServer:
    """Load the target and wrap it in a server (not yet listening)."""
    if config.tensor_parallel_size > 1:
        engine, tokenizer = open_parallel(config.model, config.tensor_parallel_size, config.limits.max_sessions)
    else:
        engine, tokenizer = open_model(config.model, max_sessions=config.limits.max_sessions, kv_tokens=CLOUD_KV_TOKENS)
    local_draft = _load_local_draft(config.draft, tokenizer) if config.draft is not None else None
    return CloudServer(
        Verifier(engine, config.synthetic_acceptance),
        tokenizer,
        config,
        model_name=config.model.name,
        local_draft=local_draft,
    )


def _load_local_draft(model: ModelConfig, target_tokenizer: TokenizerInfo) -> LocalDraft:
    """A draft for co-located speculation; it must share the target's tokenizer, as an edge must."""
    engine, tokenizer = open_model(model)
    if tokenizer.identity.fingerprint != target_tokenizer.identity.fingerprint:
        raise ValueError(
            f"the draft {model.name} does not share the target's tokenizer "
            f"({tokenizer.identity.name} vs {target_tokenizer.identity.name})"
        )
    return LocalDraft(engine, SpecConfig().draft_support)


async def serve(config: CloudConfig) -> None:
    """Run a cloud until cancelled; prints one ready line with the bound address."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    server = build_server(config)
    host, port = await server.start()
    metrics = f" metrics={_serve_metrics(server, host, config.metrics_port)}" if config.metrics_port is not None else ""
    terminated = _sigterm_event()  # before the ready line: a supervisor may send SIGTERM as soon as it reads it
    print(
        f"{READY_LINE} on {host}:{port} model={config.model.name} vocab={server.limits.vocab_size}{metrics}",
        flush=True,
    )
    try:
        await _until_terminated(server.serve_forever(), terminated)
    finally:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)
        with contextlib.suppress(asyncio.CancelledError):
            await server.close()


def _sigterm_event() -> asyncio.Event:
    """Set on SIGTERM (what systemd and `docker stop` send). Handled, the cloud then closes as on
    Ctrl-C (its edges see their links close and fail over, tensor-parallel ranks leave their group)
    and exits with status 0, where the default action would kill it on the spot."""
    terminated = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, terminated.set)
    return terminated


async def _until_terminated(serving: Coroutine[Any, Any, None], terminated: asyncio.Event) -> None:
    """Serve until SIGTERM, then return."""
    tasks = [asyncio.ensure_future(serving), asyncio.ensure_future(terminated.wait())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # a server that failed raises here
        log.info("SIGTERM: closing")
    finally:
        for task in tasks:
            task.cancel()


def _serve_metrics(server: CloudServer, host: str, port: int) -> str:
    """Prometheus text on http://HOST:PORT/metrics, from a daemon thread; returns the bound address."""
    httpd, _ = prometheus_client.start_http_server(port, addr=host, registry=server.metrics.registry)
    return f"{host}:{httpd.server_address[1]}"
