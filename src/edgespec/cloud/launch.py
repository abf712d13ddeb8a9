"""Building and running a cloud from its configuration."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace

import msgspec
import prometheus_client

from edgespec.cloud.server import CloudServer
from edgespec.cloud.verifier import Verifier
from edgespec.config import CloudConfig
from edgespec.engine.fetch import resolve_model_path
from edgespec.engine.loading import load_engine

READY_LINE = "edgespec cloud ready"


def build_server(config: CloudConfig) -> CloudServer:
    """Load the target and wrap it in a server (not yet listening)."""
    engine, tokenizer = load_engine(resolve_model_path(config.model.name), config.model)
    limits = msgspec.structs.replace(config.limits, max_context=min(config.limits.max_context, engine.max_context))
    return CloudServer(Verifier(engine), tokenizer, replace(config, limits=limits), model_name=config.model.name)


async def serve(config: CloudConfig) -> None:
    """Run a cloud until cancelled; prints one ready line with the bound address."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    server = build_server(config)
    host, port = await server.start()
    metrics = f" metrics={_serve_metrics(server, host, config.metrics_port)}" if config.metrics_port is not None else ""
    print(
        f"{READY_LINE} on {host}:{port} model={config.model.name} vocab={server.limits.vocab_size}{metrics}",
        flush=True,
    )
    try:
        await server.serve_forever()
    finally:
        with contextlib.suppress(asyncio.CancelledError):
            await server.close()


def _serve_metrics(server: CloudServer, host: str, port: int) -> str:
    """Prometheus text on http://HOST:PORT/metrics, from a daemon thread; returns the bound address."""
    httpd, _ = prometheus_client.start_http_server(port, addr=host, registry=server.metrics.registry)
    return f"{host}:{httpd.server_address[1]}"
