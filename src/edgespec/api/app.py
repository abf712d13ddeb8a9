"""The edge's HTTP routes: OpenAI's completions, chat completions and models, plus /health and
/metrics. The API key guards /v1 only, so probes and scrapers need no secret (as in vLLM)."""

from __future__ import annotations

import hmac
import time

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edgespec.api.errors import install_handlers, unauthorized
from edgespec.api.schemas import ChatCompletionRequest, CompletionRequest
from edgespec.api.service import ClientGone, CompletionService, Prepared
from edgespec.config import AUTO, ApiConfig, LossPolicy
from edgespec.edge.runtime import EdgeRuntime
from edgespec.metrics.prometheus import EdgeMetrics
from edgespec.transport.pool import CloudPool
from edgespec.transport.resilient import LinkState

CLIENT_CLOSED_REQUEST = 499  # nginx's convention; the client never sees it


def create_app(runtime: EdgeRuntime, config: ApiConfig, metrics: EdgeMetrics, model_name: str) -> FastAPI:
    app = FastAPI(title="edgespec edge", docs_url=None, redoc_url=None, openapi_url=None)
    install_handlers(app)
    service = CompletionService(runtime, metrics, model_name)
    started = int(time.time())

    async def require_key(request: Request) -> None:
        if config.api_key is None:
            return
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), config.api_key.encode()):
            raise unauthorized()

    guarded = [Depends(require_key)]

    @app.post("/v1/completions", dependencies=guarded)
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await _respond(service, service.prepare_completion(body), request)

    @app.post("/v1/chat/completions", dependencies=guarded)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        return await _respond(service, service.prepare_chat(body), request)

    @app.get("/v1/models", dependencies=guarded)
    async def models() -> dict[str, object]:
        welcome = runtime.links.welcome if runtime.links else None
        spec = runtime.policy.spec
        card = {
            "id": model_name,
            "object": "model",
            "created": started,
            "owned_by": "edgespec",
            "max_model_len": runtime.max_context,
            "target": welcome.model if welcome else None,
            "target_numerics": welcome.numerics if welcome else None,
            "draft_numerics": runtime.engine.numerics,
            "default_mode": runtime.policy.default_mode.value,
            "num_speculative_tokens": AUTO if spec.adaptive else spec.num_speculative_tokens,
            "pipelined_drafting": spec.pipeline,
        }
        return {"object": "list", "data": [card]}

    @app.get("/health")
    async def health() -> JSONResponse:
        return _health(runtime)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


async def _respond(service: CompletionService, prepared: Prepared, request: Request) -> Response:
    try:
        return await service.respond(prepared, request)
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED_REQUEST)


def _health(runtime: EdgeRuntime) -> JSONResponse:
    """200 while the edge can serve its default mode; 503 when it cannot (link down under `fail`)."""
    links = runtime.links
    if links is None:
        return JSONResponse({"status": "ok", "cloud": None})
    cloud: dict[str, object] = {
        "state": links.state.value,
        "address": links.address,
        "reconnects": links.reconnects,
        "last_error": links.last_error,
        "on_cloud_loss": runtime.policy.on_cloud_loss.value,
    }
    if isinstance(links, CloudPool):
        sessions = links.sessions()
        cloud["clouds"] = [
            {"address": m.address, "state": m.state.value, "sessions": sessions[m.address], "last_error": m.last_error}
            for m in links.members
        ]
    serving = links.state is LinkState.UP or runtime.policy.on_cloud_loss is not LossPolicy.FAIL
    return JSONResponse({"status": "ok" if serving else "unavailable", "cloud": cloud}, 200 if serving else 503)
