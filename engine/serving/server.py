"""OpenAI-compatible HTTP server over an Engine (OpenAI API: /v1/models, /v1/completions, /v1/chat/completions).

Every request goes to the engine's scheduler, so concurrent requests share decode steps. What
could block the event loop (parsing a large body, rendering the chat template, tokenizing,
compiling an output constraint) runs in the thread pool; what the server refuses (a body over the
size limit, more prompts than the queue has room for) is refused before any of that. A client that
goes away cancels its request, streaming or not. Client errors get OpenAI's error JSON, never a 500.
`GET /metrics` is Prometheus text (metrics.py) unless turned off.
"""
from __future__ import annotations

import ipaddress
import logging
import secrets
import time
import uuid
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from ..chat_template import ChatTemplateError
from ..completion import check_prompt
from ..core import Engine
from ..reasoning import ReasoningSplitter
from .choices import Choices
from .errors import api_error, install_error_handlers, validation_error
from .limits import DEFAULT_MAX_BODY_MB, BodyLimit, check_room
from .messages import check_messages
from .metrics import RequestClock, ServerMetrics
from .openai_schema import (
    APIError,
    ChatRequest,
    CompletionRequest,
    OutputRules,
    chat_prompt,
    completion_prompts,
    output_rules,
    prompt_count,
    prompt_texts,
    sampling_params,
)
from .streaming import ClientGone, EventStream, collect, sse, until_disconnected

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 2  # on SIGTERM: requests still generating after this are cancelled (a stream can last minutes)


class _Service:
    """The engine behind the routes: turns validated requests into scheduler handles and responses."""

    def __init__(self, engine: Engine, model_name: str | None, metrics: ServerMetrics | None):
        self.engine, self.metrics = engine, metrics
        self.model_name = model_name or Path(engine.path).stem
        self.names = {self.model_name, Path(engine.path).name, str(engine.path), engine.info.get("name")}
        tokenizer = engine.tokenizer  # no token covers more bytes than the longest piece (a character at least one)
        self.max_piece_bytes = max(1, *(len(tokenizer.token_bytes(i)) for i in range(len(tokenizer.tokens))))

    def check_model(self, name: str) -> None:
        if name not in self.names:
            raise APIError(400, f"model '{name}' does not exist; this server serves '{self.model_name}' "
                                "(see GET /v1/models)", "invalid_request_error", "model", "model_not_found")

    def check_room(self, count: int, param: str) -> None:
        check_room(self.engine.stats()["waiting"], self.engine.loop.max_waiting, count, param)

    def check_fits(self, texts: list[str], param: str) -> None:
        """Refuse, without tokenizing it, a text too long for the context whatever its tokens turn out to be."""
        context = self.engine.args.max_seq_len
        for text in texts:
            fewest = len(text) // self.max_piece_bytes
            if fewest > context:
                raise APIError(400, f"the prompt has {len(text):,} characters, at least {fewest:,} tokens for this "
                                    f"model, whose context is {context:,} tokens", param=param,
                               code="context_length_exceeded")

    def chat_ids(self, body: ChatRequest, rules: OutputRules) -> list[int]:
        """The chat's prompt tokens (thread pool: the template and the tokenizer may take a while)."""
        try:
            text = chat_prompt(body, self.engine.chat_template, rules.plan)
        except ChatTemplateError as exc:  # the model's template refused the messages
            raise APIError(400, str(exc), param="messages") from exc
        self.check_fits([text], "messages")
        return self.engine.tokenizer.encode(text)

    def submit(self, prompts: list[list[int]], request, chat: bool, rules: OutputRules) -> list:
        """One handle per prompt; all or none: every prompt is checked first, and a refusal while submitting
        (another request took the room) cancels the handles already made. Thread pool: a constraint compiles."""
        context, vocab = self.engine.args.max_seq_len, self.engine.args.vocab_size
        handles = []
        try:
            params = []
            for ids in prompts:
                check_prompt(ids, context, vocab)
                params.append(sampling_params(request, chat, len(ids), context, vocab, rules.constraint))
            for ids, p in zip(prompts, params):
                handles.append(self.engine.submit(ids, p))
        except Exception as exc:
            for handle in handles:
                handle.cancel()
            error = api_error(exc, chat, rules.field)
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


async def _parse(request: Request, schema):
    """The body as `schema` (thread pool: a body of megabytes takes a while to parse)."""
    body = await request.body()
    try:
        return await run_in_threadpool(schema.model_validate_json, body)
    except ValidationError as exc:
        raise validation_error(exc.errors()) from exc


def _authorize(api_key: str | None):
    async def check(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or not secrets.compare_digest(token.encode(), api_key.encode()):
            raise APIError(401, "invalid API key: send it as 'Authorization: Bearer KEY'", "authentication_error",
                           code="invalid_api_key")
    return check


def create_app(engine: Engine, api_key: str | None = None, model_name: str | None = None, *,
               max_body_mb: float = DEFAULT_MAX_BODY_MB, metrics: bool = True) -> FastAPI:
    """The FastAPI app serving `engine` (model id: `model_name`, default the GGUF file's stem).

    api_key: required as a bearer token (None: no key; an empty key is refused, as it would let an
    empty token in). max_body_mb: larger bodies get 413. metrics: serve GET /metrics."""
    if api_key is not None and not api_key.strip():
        raise ValueError("the API key is empty; give a real key, or none to serve without one")
    server_metrics = ServerMetrics(lambda: engine, model_name or Path(engine.path).stem) if metrics else None
    service = _Service(engine, model_name, server_metrics)
    app = FastAPI(title="Reasoning Studio engine", docs_url=None, redoc_url=None)
    refused = server_metrics.refused if server_metrics else None
    install_error_handlers(app, refused)
    app.add_middleware(BodyLimit, max_bytes=int(max_body_mb * 2**20), on_refused=refused and (lambda: refused(413)))
    _add_routes(app, service, [Depends(_authorize(api_key))])
    if server_metrics is not None:
        app.add_api_route("/metrics", server_metrics.response, methods=["GET"], include_in_schema=False)
    return app


def _add_routes(app: FastAPI, service: _Service, auth: list) -> None:
    engine = service.engine

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
        service.check_room(prompt_count(body), "prompt")
        service.check_fits(prompt_texts(body), "prompt")
        prompts = await run_in_threadpool(completion_prompts, body, engine.tokenizer, engine.args.vocab_size)
        return await _respond(service, request, body, prompts, False, output_rules(body))

    @app.post("/v1/chat/completions", dependencies=auth)
    async def chat_completions(request: Request):
        body: ChatRequest = await _parse(request, ChatRequest)
        service.check_model(body.model)
        check_messages(body.messages)
        rules = output_rules(body)
        service.check_room(1, "messages")
        prompt = await run_in_threadpool(service.chat_ids, body, rules)
        return await _respond(service, request, body, [prompt], True, rules)


async def _respond(service: _Service, request: Request, body, prompts: list[list[int]], chat: bool, rules: OutputRules):
    handles = await run_in_threadpool(service.submit, prompts, body, chat, rules)
    kind = ("chat.completion.chunk" if body.stream else "chat.completion") if chat else "text_completion"
    head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", "object": kind, "created": int(time.time()),
            "model": service.model_name, **({"system_fingerprint": None} if chat else {})}
    choices = service.choices(handles, body, chat, rules.plan is not None)
    usage = {"prompt_tokens": sum(len(p) for p in prompts)}
    clock = service.metrics.request(usage["prompt_tokens"]) if service.metrics else None
    count = len(handles) * body.n
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        stream = sse(choices, handles, body.n, head, chat, usage if include_usage else None, clock)
        return EventStream(_timed(stream, clock, count), media_type="text/event-stream",
                           headers={"Cache-Control": "no-cache"})
    try:
        await until_disconnected(request.receive, collect(choices, handles, body.n, clock))
    except ClientGone:
        return Response(status_code=499)  # nobody reads it: nginx's code for "client closed request"
    finally:
        if clock is not None:
            clock.finish(count)
    return {**head, "choices": choices.final(), "usage": choices.usage(usage["prompt_tokens"])}


async def _timed(stream, clock: RequestClock | None, count: int):
    try:
        async for chunk in stream:
            yield chunk
    finally:
        await stream.aclose()
        if clock is not None:
            clock.finish(count)


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
          model_name: str | None = None, warn: bool = True, max_body_mb: float = DEFAULT_MAX_BODY_MB,
          metrics: bool = True) -> None:
    """Serve the engine until interrupted or sent SIGTERM (`warn=False` when the caller printed the exposure
    warning); requests still running SHUTDOWN_GRACE_S after the signal are cancelled."""
    import uvicorn

    warning = exposure_warning(host, api_key)
    if warning and warn:
        log.warning(warning)
    app = create_app(engine, api_key, model_name, max_body_mb=max_body_mb, metrics=metrics)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=SHUTDOWN_GRACE_S)
