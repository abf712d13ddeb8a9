"""`edgespec edge`: load the draft, connect to the cloud (retrying in the background if it is not
up yet), and serve the HTTP API with uvicorn on a socket bound first, so port 0 works and the
ready line names the real address."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

import uvicorn

from edgespec.api.app import create_app
from edgespec.config import EDGE_READY_LINE, ApiConfig, EdgePolicy, LinkConfig, ModelConfig
from edgespec.edge.launch import start_edge
from edgespec.metrics.prometheus import EdgeMetrics

READY_LINE = EDGE_READY_LINE


@dataclass(frozen=True)
class EdgeServerConfig:
    model: ModelConfig
    link: list[LinkConfig] | None  # one per cloud; None: edge mode only
    policy: EdgePolicy
    api: ApiConfig


async def serve(config: EdgeServerConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    metrics = EdgeMetrics()
    runtime = await start_edge(
        config.model, config.link, config.policy, require_cloud=False, observer=metrics, link_events=metrics
    )
    model_name = config.api.served_model_name or config.model.name
    app = create_app(runtime, config.api, metrics, model_name)
    sock = _bind(config.api.host, config.api.port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    host, port = sock.getsockname()[:2]
    cloud = ",".join(f"{c.host}:{c.port}" for c in config.link) if config.link else "none"
    print(f"{READY_LINE} on http://{host}:{port} model={model_name} cloud={cloud}", flush=True)
    try:
        await server.serve(sockets=[sock])
    finally:
        await runtime.aclose()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock
