"""The rules OpenAI's Chat Completions API holds `messages` to, each broken one a 400 naming the field.

A conversation has a user turn; every message has content except an assistant message that makes
tool calls (its content may be null); a `tool` message answers a call of the assistant message
before it (directly, or after that message's other answers) and names the call by `tool_call_id`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .openai_schema import APIError

if TYPE_CHECKING:
    from .openai_schema import ChatMessage


def check_messages(messages: list[ChatMessage]) -> None:
    """Raise APIError(400) naming the first message field that breaks OpenAI's rules."""
    if not messages:
        raise APIError(400, "messages must not be empty", param="messages")
    calls: set[str] | None = None  # the ids a tool message may answer now; None: no assistant call to answer
    for i, message in enumerate(messages):
        _check_content(i, message)
        if message.role == "tool":
            _check_tool_answer(i, message, calls)
        else:
            calls = {c.id for c in message.tool_calls} if message.role == "assistant" and message.tool_calls else None
    if not any(m.role == "user" for m in messages):
        raise APIError(400, "messages must include a user message; only "
                            f"{' and '.join(sorted({m.role for m in messages}))} turns were sent", param="messages")


def _check_content(i: int, message: ChatMessage) -> None:
    if message.content is None and not (message.role == "assistant" and message.tool_calls):
        field = f"messages.{i}.content"
        raise APIError(400, f"{field}: a {message.role} message needs content (it may be null only in an "
                            "assistant message with tool_calls)", param=field)


def _check_tool_answer(i: int, message: ChatMessage, calls: set[str] | None) -> None:
    if calls is None:
        field = f"messages.{i}.role"
        raise APIError(400, f"{field}: a message with role 'tool' must answer a preceding assistant message "
                            "with 'tool_calls'", param=field)
    field = f"messages.{i}.tool_call_id"
    if not message.tool_call_id:
        raise APIError(400, f"{field}: a tool message must name the call it answers", param=field)
    named = {c for c in calls if c}
    if named and message.tool_call_id not in named:
        raise APIError(400, f"{field}: '{message.tool_call_id[:80]}' is not a call of the preceding assistant message "
                            f"({', '.join(sorted(named))[:200]})", param=field)
