"""Errors in OpenAI's JSON shape, with the status codes OpenAI clients act on."""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param

    def body(self) -> dict[str, object]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.status}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, "invalid_request_error", param)


def unauthorized() -> ApiError:
    return ApiError(401, "missing or wrong API key (send 'Authorization: Bearer KEY')", "authentication_error")


def unavailable(message: str) -> ApiError:
    return ApiError(503, message, "service_unavailable")


def install_handlers(app: FastAPI) -> None:
    """Every failure, whatever raised it, leaves as OpenAI-shaped JSON."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid_body(_: Request, exc: RequestValidationError) -> JSONResponse:
        return bad_request(*_describe(exc)).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return ApiError(exc.status_code, str(exc.detail), "invalid_request_error").response()


def _describe(exc: RequestValidationError) -> tuple[str, str | None]:
    """One line naming the first bad field, e.g. "max_tokens: Input should be greater than or equal to 1"."""
    errors = exc.errors()
    if not errors:
        return "invalid request body", None
    first = errors[0]
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(location) or None
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON", None
    if param is None and first.get("type") == "model_attributes_type":
        return "the request body must be a JSON object (send Content-Type: application/json)", None
    message = str(first.get("msg", "invalid value"))
    return (f"{param}: {message}" if param else message), param


def error_event(error: ApiError) -> str:
    """An error inside an SSE stream, as OpenAI clients parse it."""
    return f"data: {json.dumps(error.body())}\n\n"
