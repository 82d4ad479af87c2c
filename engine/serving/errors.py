"""OpenAI's error JSON for every failure of the server: `{"error": {"message", "type", "param", "code"}}`.

Client errors get their status (400 naming the field, 401, 404, 413, 429 with Retry-After); anything
unforeseen is logged and answered 500 without details, never a traceback.
"""
from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..completion import ContextLengthError, ParamError
from ..request import QueueFullError
from .openai_schema import APIError

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1
UNION_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def queue_full(detail: str = "") -> APIError:
    """429: the waiting queue has no room now; the client should retry."""
    return APIError(429, f"the server is busy (queue full{': ' + detail if detail else ''}); retry in {RETRY_AFTER_S} s",
                    "rate_limit_error", code="queue_full", headers={"Retry-After": str(RETRY_AFTER_S)})


def api_error(exc: Exception, chat: bool, source: str | None = None) -> Exception:
    """The client-facing error for what submitting raised (or the exception itself when it is ours);
    `source` is the request field the output constraint came from."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, QueueFullError):
        return queue_full(str(exc))
    if isinstance(exc, ParamError):
        renamed = {"logprobs": "top_logprobs", "prompt": "messages"} if chat else {}
        renamed["constraint"] = source  # the engine's field: say which request field it came from
        code = "context_length_exceeded" if isinstance(exc, ContextLengthError) else None
        return APIError(400, str(exc), param=renamed.get(exc.param, exc.param), code=code)
    return exc


def validation_error(errors: list) -> APIError:
    """400 naming the field of the first error (without the union member pydantic adds, as in `prompt.str`)."""
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    while loc and len(loc) > 1 and (loc[-1] in UNION_TAGS or "[" in loc[-1]):
        loc.pop()
    param = ".".join(loc) or None
    return APIError(400, f"{param}: {first.get('msg')}" if param else str(first.get("msg")), param=param)


def error_response(exc: APIError) -> JSONResponse:
    body = {"error": {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}}
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)


def install_error_handlers(app: FastAPI, on_error=None) -> None:
    """OpenAI-shaped answers for every exception a route raises; `on_error(status)` sees each client error."""
    def respond(exc: APIError) -> JSONResponse:
        if on_error is not None:
            on_error(exc.status)
        return error_response(exc)

    @app.exception_handler(APIError)
    async def api_error_handler(request, exc: APIError):
        return respond(exc)

    @app.exception_handler(ParamError)
    async def param_error(request, exc: ParamError):
        return respond(APIError(400, str(exc), param=exc.param))

    @app.exception_handler(RequestValidationError)
    async def request_validation_error(request, exc: RequestValidationError):
        return respond(validation_error(exc.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return respond(APIError(exc.status_code, str(exc.detail), kind, headers=exc.headers))

    @app.exception_handler(Exception)
    async def server_error(request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return error_response(APIError(500, "internal server error", "server_error"))
