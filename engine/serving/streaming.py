"""Scheduler handles' events into the event loop: gathered for one response, or as OpenAI's SSE stream.

Iterating a handle blocks, so a thread per handle drains it into the loop. Whatever ends the
consumer (the reply is complete, the client went away, the server stops) cancels every handle, so
the engine stops working for a client that is gone and its KV blocks return to the pool.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi.responses import StreamingResponse

from .choices import Choices

log = logging.getLogger(__name__)


class ClientGone(Exception):
    """The client disconnected before its (non-streaming) reply was ready."""


class EventStream(StreamingResponse):
    """A StreamingResponse that always closes its body, so an early exit (disconnect) cancels the generation."""

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()


async def events(handles: list, n: int, observe: Callable | None = None) -> AsyncIterator[tuple[int, object]]:
    """(choice index, event) from all handles as they come; every handle is cancelled when this stops.
    `observe(index, event)` sees each event first (the metrics' clock)."""
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
                if observe is not None:
                    observe(offset + event.index, event)
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


async def collect(choices: Choices, handles: list, n: int, observe: Callable | None = None) -> Choices:
    async for index, event in events(handles, n, observe):
        choices.add(index, event)
    return choices


async def until_disconnected(receive: Callable[[], Awaitable[dict]], work: Awaitable):
    """`work`'s result; ClientGone (and `work` cancelled, with its handles) if the client disconnects first.
    Call once the request body is read: what `receive` brings then is the disconnect."""
    task, gone = asyncio.ensure_future(work), asyncio.ensure_future(_disconnect(receive))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            raise ClientGone
        return task.result()
    finally:
        for pending in (task, gone):
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, ClientGone):
                await pending  # the work's own cleanup (cancelling the handles) runs before we go on


async def _disconnect(receive: Callable[[], Awaitable[dict]]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def sse(choices: Choices, handles: list, n: int, head: dict, chat: bool, usage: dict | None,
              observe: Callable | None = None) -> AsyncIterator[str]:
    """OpenAI's stream: a chunk per event (chat: a role chunk first, a finish chunk last), usage, [DONE]."""
    extra = {"usage": None} if usage is not None else {}
    try:
        if chat:
            for index in range(len(handles) * n):
                yield _data({**head, "choices": [choices.role_delta(index)], **extra})
        async for index, event in events(handles, n, observe):
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
