"""OpenAI-compatible HTTP server over an Engine (OpenAI API: /v1/models, /v1/completions, /v1/chat/completions).

Every request goes to the engine's scheduler, so concurrent requests share decode steps. Iterating a
handle blocks, so a thread per handle drains it into the event loop; streams are Server-Sent Events
in OpenAI's chunk format ending with `data: [DONE]`. Client errors get OpenAI's error JSON, never a 500.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from ..chat_template import ChatTemplateError
from ..completion import ContextLengthError, ParamError, check_prompt
from ..core import Engine
from ..reasoning import ReasoningSplitter
from ..request import QueueFullError
from .choices import Choices
from .openai_schema import (
    APIError,
    ChatRequest,
    CompletionRequest,
    OutputRules,
    chat_prompt,
    completion_prompts,
    output_rules,
    sampling_params,
)

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1


class _EventStream(StreamingResponse):
    """A StreamingResponse that always closes its body, so an early exit (disconnect) cancels the generation."""

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()


class _Service:
    """The engine behind the routes: turns validated requests into scheduler handles and responses."""

    def __init__(self, engine: Engine, model_name: str | None):
        self.engine = engine
        self.model_name = model_name or Path(engine.path).stem
        self.names = {self.model_name, Path(engine.path).name, str(engine.path), engine.info.get("name")}

    def check_model(self, name: str) -> None:
        if name not in self.names:
            raise APIError(400, f"model '{name}' does not exist; this server serves '{self.model_name}' "
                                "(see GET /v1/models)", "invalid_request_error", "model", "model_not_found")

    def submit(self, prompts: list[list[int]], request, chat: bool, rules: OutputRules) -> list:
        """One handle per prompt; all or none (a later refusal cancels the earlier handles)."""
        context, vocab = self.engine.args.max_seq_len, self.engine.args.vocab_size
        handles = []
        try:
            for ids in prompts:
                check_prompt(ids, context, vocab)
                params = sampling_params(request, chat, len(ids), context, vocab, rules.constraint)
                handles.append(self.engine.submit(ids, params))
        except Exception as exc:
            for handle in handles:
                handle.cancel()
            error = _api_error(exc, chat, rules.field)
            if error is exc:
                raise
            raise error from exc
        return handles

    def choices(self, handles: list, request, chat: bool, tools: bool = False) -> Choices:
        """Where the request's events are gathered; chat splits a reasoning model's thinking off unless asked not to."""
        logprobs = (request.logprobs is True) if chat else (request.logprobs is not None)
        splitters = None
        if chat and request.reasoning_format != "none":
            splitters = [ReasoningSplitter(self.engine.reasoning_tags, h.starts_in_reasoning)
                         for h in handles for _ in range(request.n)]
        return Choices(len(handles) * request.n, self, chat, logprobs, splitters, tools)

    def token_text(self, token_id: int) -> str:
        """A token as OpenAI shows it: its text, or `bytes:\\xNN...` for part of a UTF-8 character."""
        raw = self.engine.tokenizer.token_bytes(token_id)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)

    def token_bytes(self, token_id: int) -> list[int]:
        return list(self.engine.tokenizer.token_bytes(token_id))


def _api_error(exc: Exception, chat: bool, source: str | None = None) -> Exception:
    """The client-facing error for what submitting raised (or the exception itself when it is ours);
    `source` is the request field the output constraint came from."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, QueueFullError):
        return APIError(429, f"the server is busy (queue full); retry in {RETRY_AFTER_S} s", "rate_limit_error",
                        code="queue_full", headers={"Retry-After": str(RETRY_AFTER_S)})
    if isinstance(exc, ParamError):
        renamed = {"logprobs": "top_logprobs", "prompt": "messages"} if chat else {}
        renamed["constraint"] = source  # the engine's field: say which request field it came from
        code = "context_length_exceeded" if isinstance(exc, ContextLengthError) else None
        return APIError(400, str(exc), param=renamed.get(exc.param, exc.param), code=code)
    return exc


async def _events(handles: list, n: int) -> AsyncIterator[tuple[int, object]]:
    """(choice index, event) from all handles as they come; every handle is cancelled when this stops."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    for i, handle in enumerate(handles):
        threading.Thread(target=_drain, args=(handle, i * n, loop, queue), name=f"drain-{handle.id}",
                         daemon=True).start()
    remaining = len(handles)
    try:
        while remaining:
            offset, event = await queue.get()
            if event is None:
                remaining -= 1
            elif isinstance(event, Exception):
                raise event
            else:
                yield offset + event.index, event
    finally:
        for handle in handles:
            handle.cancel()  # idempotent; frees the KV blocks of a request whose client went away


def _drain(handle, offset: int, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
    """Thread body: iterate one handle (blocking) and post its events, then None, to the event loop."""
    def post(item) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (offset, item))
        except RuntimeError:  # the loop is closed: the server stopped
            handle.cancel()

    try:
        for event in handle:
            post(event)
    except Exception as exc:  # the engine failed this request: the route reports it
        log.exception("generation %s failed", handle.id)
        post(exc)
    post(None)


async def _collect(choices: Choices, handles: list, n: int) -> Choices:
    async for index, event in _events(handles, n):
        choices.add(index, event)
    return choices


async def _sse(choices: Choices, handles: list, n: int, head: dict, chat: bool,
               usage: dict | None) -> AsyncIterator[str]:
    """OpenAI's stream: a chunk per event (chat: a role chunk first, a finish chunk last), usage, [DONE]."""
    extra = {"usage": None} if usage is not None else {}
    try:
        if chat:
            for index in range(len(handles) * n):
                yield _data({**head, "choices": [choices.role_delta(index)], **extra})
        async for index, event in _events(handles, n):
            for choice in choices.add(index, event):
                yield _data({**head, "choices": [choice], **extra})
    except Exception as exc:  # noqa: BLE001 - headers are sent: report the failure in the stream, as OpenAI does
        yield _data({"error": {"message": f"generation failed: {exc}", "type": "server_error", "param": None,
                               "code": None}})
    else:
        if usage is not None:
            yield _data({**head, "choices": [], "usage": {**usage, **choices.usage(usage["prompt_tokens"])}})
    yield "data: [DONE]\n\n"


def _data(chunk: dict) -> str:
    return f"data: {json.dumps(chunk, ensure_ascii=False, separators=(',', ':'))}\n\n"


async def _parse(request: Request, schema):
    body = await request.body()
    try:
        return schema.model_validate_json(body)
    except ValidationError as exc:
        raise _validation_error(exc.errors()) from exc


UNION_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def _validation_error(errors: list) -> APIError:
    """400 naming the field of the first error (without the union member pydantic adds, as in `prompt.str`)."""
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    while loc and len(loc) > 1 and (loc[-1] in UNION_TAGS or "[" in loc[-1]):
        loc.pop()
    param = ".".join(loc) or None
    return APIError(400, f"{param}: {first.get('msg')}" if param else str(first.get("msg")), param=param)


def _error_response(exc: APIError) -> JSONResponse:
    body = {"error": {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}}
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request, exc: APIError):
        return _error_response(exc)

    @app.exception_handler(ParamError)
    async def param_error(request, exc: ParamError):
        return _error_response(APIError(400, str(exc), param=exc.param))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc: RequestValidationError):
        return _error_response(_validation_error(exc.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return _error_response(APIError(exc.status_code, str(exc.detail), kind, headers=exc.headers))

    @app.exception_handler(Exception)
    async def server_error(request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return _error_response(APIError(500, "internal server error", "server_error"))


def _authorize(api_key: str | None):
    async def check(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), api_key.encode()):
            raise APIError(401, "invalid API key: send it as 'Authorization: Bearer KEY'", "authentication_error",
                           code="invalid_api_key")
    return check


def create_app(engine: Engine, api_key: str | None = None, model_name: str | None = None) -> FastAPI:
    """The FastAPI app serving `engine` (model id: `model_name`, default the GGUF file's stem)."""
    service = _Service(engine, model_name)
    app = FastAPI(title="Reasoning Studio engine", docs_url=None, redoc_url=None)
    _install_error_handlers(app)
    auth = [Depends(_authorize(api_key))]

    @app.get("/health")
    async def health():
        stats = engine.stats()
        return {"status": "ok", "model": service.model_name, "model_loaded": True, "queue_depth": stats.pop("waiting"),
                **stats}

    @app.get("/v1/models", dependencies=auth)
    async def models():
        return {"object": "list", "data": [{"id": service.model_name, "object": "model", "created": 0,
                                            "owned_by": "reason-studio", "max_model_len": engine.args.max_seq_len}]}

    @app.post("/v1/completions", dependencies=auth)
    async def completions(request: Request):
        body: CompletionRequest = await _parse(request, CompletionRequest)
        service.check_model(body.model)
        prompts = completion_prompts(body, engine.tokenizer, engine.args.vocab_size)
        return await _respond(service, body, prompts, False, output_rules(body))

    @app.post("/v1/chat/completions", dependencies=auth)
    async def chat_completions(request: Request):
        body: ChatRequest = await _parse(request, ChatRequest)
        service.check_model(body.model)
        rules = output_rules(body)
        try:
            text = chat_prompt(body, engine.chat_template, rules.plan)
        except ChatTemplateError as exc:  # the model's template refused the messages
            raise APIError(400, str(exc), param="messages") from exc
        return await _respond(service, body, [engine.tokenizer.encode(text)], True, rules)

    return app


async def _respond(service: _Service, body, prompts: list[list[int]], chat: bool, rules: OutputRules):
    handles = service.submit(prompts, body, chat, rules)
    kind = ("chat.completion.chunk" if body.stream else "chat.completion") if chat else "text_completion"
    head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", "object": kind, "created": int(time.time()),
            "model": service.model_name, **({"system_fingerprint": None} if chat else {})}
    choices = service.choices(handles, body, chat, rules.plan is not None)
    usage = {"prompt_tokens": sum(len(p) for p in prompts)}
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        stream = _sse(choices, handles, body.n, head, chat, usage if include_usage else None)
        return _EventStream(stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    await _collect(choices, handles, body.n)
    return {**head, "choices": choices.final(), "usage": choices.usage(usage["prompt_tokens"])}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, api_key: str | None) -> str | None:
    """The warning to give when the API is reachable from other machines without a key."""
    if is_loopback(host) or api_key:
        return None
    return (f"serving on {host} without --api-key: anyone who can reach this machine can use the model. "
            "Use --api-key KEY or --host 127.0.0.1.")


def serve(engine: Engine, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          model_name: str | None = None, warn: bool = True) -> None:
    """Serve the engine until interrupted (`warn=False` when the caller printed the exposure warning)."""
    import uvicorn

    warning = exposure_warning(host, api_key)
    if warning and warn:
        log.warning(warning)
    uvicorn.run(create_app(engine, api_key, model_name), host=host, port=port, log_level="warning")
