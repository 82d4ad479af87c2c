"""Tool calls in the model's output, in the Hermes/Qwen format, which our grammar enforces:

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

`ToolCallStream` splits one choice's text, as it streams, into content (prose before the call) and
OpenAI's tool_call deltas (a header with id and name, then pieces of the arguments' JSON text); the
full response reads the same object, so a stream always reassembles to the full response's call.
"""
from __future__ import annotations

import json
import uuid

TAG, END = "<tool_call>", "</tool_call>"
OPEN = TAG + "\n"
CLOSE = "\n" + END
TAIL = "}" + CLOSE  # closes the call object after its arguments
NAME_KEY, ARGUMENTS_KEY = '{"name": ', ', "arguments": '  # compact JSON: name first (the grammar's property order)


def call_block(name: str, arguments: str) -> str:
    """The text of one call, as the model writes it (for prompts that show earlier calls)."""
    return f"{OPEN}{NAME_KEY}{json.dumps(name, ensure_ascii=False)}{ARGUMENTS_KEY}{arguments}{TAIL}"


def _header(body: str) -> tuple[str, int] | None:
    """(name, offset of the arguments) once the call's body has them; None while incomplete."""
    if not body.startswith("\n" + NAME_KEY):
        return None
    start = len("\n" + NAME_KEY)
    try:
        name, end = json.JSONDecoder().raw_decode(body, start)
    except ValueError:  # the name is not finished yet
        return None
    if not isinstance(name, str) or not body.startswith(ARGUMENTS_KEY, end):
        return None
    return name, end + len(ARGUMENTS_KEY)


def _held_back(text: str) -> int:
    """How many trailing characters could begin the tag (kept until the next text decides)."""
    for size in range(min(len(TAG) - 1, len(text)), 0, -1):
        if TAG.startswith(text[-size:]):
            return size
    return 0


class ToolCallStream:
    """One choice's text → content and tool_call deltas; `content`, `calls` and `complete` hold the result."""

    def __init__(self):
        self.text = ""
        self.content = ""
        self.calls: list[dict] = []
        self.complete = False  # the call's closing tag arrived
        self._sent = 0  # characters of `text` already given out (as content or arguments)
        self._tag_at: int | None = None
        self._id = f"call_{uuid.uuid4().hex[:24]}"

    def feed(self, text: str, final: bool = False) -> tuple[str, list[dict]]:
        """(content, tool_call deltas) that `text`, the next piece of the output, makes known."""
        self.text += text
        content = self._prose(final) if self._tag_at is None else ""
        deltas = self._call(final) if self._tag_at is not None else []
        if final and self._tag_at is not None and not self.calls:  # max_tokens ended it inside the tag or name
            content, self._sent = content + self.text[self._sent:], len(self.text)
        self.content += content
        return content, deltas

    def _prose(self, final: bool) -> str:
        found = self.text.find(TAG, self._sent)
        if found >= 0:
            self._tag_at = found
        end = found if found >= 0 else len(self.text) - (0 if final else _held_back(self.text))
        piece, self._sent = self.text[self._sent:end], max(self._sent, end)
        return piece

    def _call(self, final: bool) -> list[dict]:
        deltas = []
        if not self.calls:
            header = _header(self.text[self._tag_at + len(TAG):])
            if header is None:
                return []
            self._sent = self._tag_at + len(TAG) + header[1]
            self.calls.append({"id": self._id, "type": "function", "function": {"name": header[0], "arguments": ""}})
            deltas.append({"index": 0, "id": self._id, "type": "function",
                           "function": {"name": header[0], "arguments": ""}})
        self.complete = final and self.text.endswith(TAIL)
        end = len(self.text) - len(TAIL) if self.complete or not final else len(self.text)
        if end > self._sent:
            piece, self._sent = self.text[self._sent:end], end
            self.calls[0]["function"]["arguments"] += piece
            deltas.append({"index": 0, "function": {"arguments": piece}})
        return deltas


def tool_call_message(stream: ToolCallStream) -> dict:
    """The assistant message of a finished choice: its call (when complete) or its whole text as content."""
    if not stream.complete:
        return {"role": "assistant", "content": stream.text}
    return {"role": "assistant", "content": stream.content or None, "tool_calls": stream.calls}
