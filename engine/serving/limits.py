"""What the server refuses before doing any work: bodies over the size limit (413) and requests the
waiting queue has no room for (429, or 400 for more prompts than it can ever hold).

Both run before a prompt is parsed into messages or tokenized, so a flood of oversized or too many
requests costs the server almost nothing and leaves no trace in the queue.
"""
from __future__ import annotations

from collections.abc import Callable

from .errors import error_response, queue_full
from .openai_schema import APIError

DEFAULT_MAX_BODY_MB = 8.0  # ~2M tokens of text: past any context this engine serves


class BodyTooLarge(APIError):
    def __init__(self, limit: int):
        super().__init__(413, f"the request body is larger than the server's limit of {limit:,} bytes "
                              "(reason serve --max-body-mb)", code="request_too_large")


class BodyLimit:
    """ASGI middleware: refuse bodies over `max_bytes` with 413, by Content-Length before reading when it is
    sent, else as the body arrives; `on_refused()` counts each refusal."""

    def __init__(self, app, max_bytes: int, on_refused: Callable[[], None] | None = None):
        self.app, self.max_bytes, self.on_refused = app, max_bytes, on_refused

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            if self.on_refused is not None:
                self.on_refused()
            return await error_response(BodyTooLarge(self.max_bytes))(scope, receive, send)
        received = 0

        async def receive_within_limit() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b"")) if message["type"] == "http.request" else 0
            if received > self.max_bytes:  # the route's exception handler answers 413
                raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, receive_within_limit, send)


def check_room(waiting: int, limit: int, count: int, param: str) -> None:
    """Refuse a request of `count` prompts before any work: 400 when more than the queue ever holds, 429
    when the queue has no room for them now (so a refused request never enters it)."""
    if count > limit:
        raise APIError(400, f"{count:,} prompts in one request; this server queues at most {limit:,} "
                            "(send them in smaller requests)", param=param)
    if waiting + count > limit:
        raise queue_full(f"{waiting} requests waiting, limit {limit}")
