"""OpenAI's shapes of generated choices: stream chunk choices and final choices, for completions and chat
(OpenAI API reference: legacy `logprobs` for completions, the `content` list and `tool_calls` for chat)."""
from __future__ import annotations

from .tool_calls import ToolCallStream, tool_call_message


class Choices:
    """Events gathered per choice, and OpenAI's shapes of them: stream chunk choices and final choices.

    With `splitters` (chat, one per choice) a reasoning model's thinking goes to `reasoning_content`;
    with `tools` each choice's answer is read for a tool call (`tool_calls`, finish_reason "tool_calls").
    """

    def __init__(self, count: int, tokens, chat: bool, logprobs: bool, splitters: list | None = None,
                 tools: bool = False):
        self.tokens, self.chat, self.want_logprobs = tokens, chat, logprobs  # tokens: token_text, token_bytes
        self.splitters = splitters
        self.tool_streams = [ToolCallStream() for _ in range(count)] if tools else None
        self.reasoning: list[list[str]] = [[] for _ in range(count)]
        self.text: list[list[str]] = [[] for _ in range(count)]
        self.logprobs: list[list[dict]] = [[] for _ in range(count)]
        self.offsets = [0] * count  # text offset of the next token (legacy completions logprobs)
        self.counts = [0] * count
        self.finish: list[str | None] = [None] * count

    def add(self, index: int, event) -> list[dict]:
        """Record one event; return the stream choices it makes (none when it carries nothing new)."""
        entry = self._logprob(index, event.logprob) if self.want_logprobs and event.logprob else None
        self.counts[index] += event.token_id is not None
        reasoning, text = self._split(index, event)
        self.reasoning[index].append(reasoning)
        self.text[index].append(text)
        self.finish[index] = event.finish_reason or self.finish[index]
        if self.chat:
            return self._chat_chunks(index, event.finish_reason, reasoning, text, entry)
        if not (text or entry or event.finish_reason):
            return []
        return [{"index": index, "text": text, "logprobs": _legacy([entry]) if entry else None,
                 "finish_reason": event.finish_reason}]

    def _chat_chunks(self, index: int, finish: str | None, reasoning: str, text: str, entry: dict | None) -> list[dict]:
        calls = []
        if self.tool_streams is not None:
            text, calls = self.tool_streams[index].feed(text, final=bool(finish))
        out = []
        if text or reasoning or entry or calls:
            delta = {"reasoning_content": reasoning} if reasoning else {}
            delta = {**delta, "content": text} if text or not (reasoning or calls) else delta
            delta = {**delta, "tool_calls": calls} if calls else delta
            out.append({"index": index, "delta": delta,
                        "logprobs": {"content": [_chat_entry(entry)]} if entry else None, "finish_reason": None})
        if finish:
            out.append({"index": index, "delta": {}, "logprobs": None, "finish_reason": self._finish(index)})
        return out

    def _finish(self, index: int) -> str:
        called = self.tool_streams is not None and self.tool_streams[index].complete
        return "tool_calls" if called else self.finish[index] or "length"

    def _split(self, index: int, event) -> tuple[str, str]:
        """(reasoning, answer) text of an event; all answer without a splitter."""
        if self.splitters is None:
            return "", event.text or ""
        return self.splitters[index].feed(event.text or "", final=bool(event.finish_reason))

    def role_delta(self, index: int) -> dict:
        return {"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}

    def final(self) -> list[dict]:
        out = []
        for i, parts in enumerate(self.text):
            text, finish = "".join(parts), self._finish(i)
            if self.chat:
                logprobs = {"content": [_chat_entry(e) for e in self.logprobs[i]]} if self.want_logprobs else None
                message = {"role": "assistant", "content": text}
                if self.tool_streams is not None:
                    message = tool_call_message(self.tool_streams[i])
                if self.splitters is not None:
                    message["reasoning_content"] = "".join(self.reasoning[i]) or None
                out.append({"index": i, "message": message, "logprobs": logprobs, "finish_reason": finish})
            else:
                logprobs = _legacy(self.logprobs[i]) if self.want_logprobs else None
                out.append({"index": i, "text": text, "logprobs": logprobs, "finish_reason": finish})
        return out

    def usage(self, prompt_tokens: int) -> dict:
        completion = sum(self.counts)
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                "total_tokens": prompt_tokens + completion}

    def _logprob(self, index: int, logprob: dict) -> dict:
        token = self.tokens.token_text(logprob["token"])
        top = [{"token": self.tokens.token_text(t), "logprob": lp, "bytes": self.tokens.token_bytes(t)}
               for t, lp in logprob["top"].items()]
        entry = {"token": token, "logprob": logprob["logprob"], "bytes": self.tokens.token_bytes(logprob["token"]),
                 "top_logprobs": top, "text_offset": self.offsets[index]}
        self.offsets[index] += len(bytes(entry["bytes"]).decode("utf-8", errors="ignore"))
        self.logprobs[index].append(entry)
        return entry


def _chat_entry(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if k != "text_offset"}


def _legacy(entries: list[dict]) -> dict:
    """Completions' logprobs: parallel lists over tokens."""
    return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
            "text_offset": [e["text_offset"] for e in entries]}
