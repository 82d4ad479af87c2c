"""Reasoning models' thinking kept apart from their answer (as llama.cpp's `--reasoning-format
deepseek` and vLLM's reasoning parsers): text between the open and close tags (`<think>` …
`</think>`, or the pair the chat template uses) is reasoning, the rest is the answer. Templates of
DeepSeek-R1-style models open the block in the prompt itself, so a generation may start inside it.
"""
from __future__ import annotations

from dataclasses import dataclass

# (open, close) pairs that chat templates of reasoning models use; the first one a template
# mentions is that model's, else the first (the DeepSeek-R1 / Qwen3 convention).
KNOWN_TAGS = (("<think>", "</think>"), ("<thinking>", "</thinking>"),
              ("<|begin_of_thought|>", "<|end_of_thought|>"), ("<reasoning>", "</reasoning>"))


@dataclass(frozen=True)
class ReasoningTags:
    open: str = KNOWN_TAGS[0][0]
    close: str = KNOWN_TAGS[0][1]

    @classmethod
    def of_template(cls, template: str | None) -> ReasoningTags:
        for open_tag, close_tag in KNOWN_TAGS:
            if template and close_tag in template:
                return cls(open_tag, close_tag)
        return cls()

    def open_at_end(self, text: str) -> bool:
        """Whether `text` (a prompt) leaves a reasoning block open: the generation starts inside it."""
        opened = text.rfind(self.open)
        return opened >= 0 and text.find(self.close, opened) < 0


class ReasoningSplitter:
    """Routes streamed text to (reasoning, answer); a tag cut across two pieces is held back until whole."""

    def __init__(self, tags: ReasoningTags, inside: bool = False):
        self.tags, self.inside = tags, inside
        self._held = ""
        self._after_close = False  # strip the blank line models put between the block and the answer

    def feed(self, text: str, final: bool = False) -> tuple[str, str]:
        """Add text; return the newly final (reasoning, answer) pieces (all of them when `final`:
        a partial tag held back is plain text after all)."""
        reasoning, answer = [], []
        text = self._held + text
        self._held = ""
        while text:
            tag = self.tags.close if self.inside else self.tags.open
            at = text.find(tag)
            if at < 0:
                keep = _partial_suffix(text, tag)
                text, self._held = text[:len(text) - keep], text[len(text) - keep:]
                self._route(text, reasoning, answer)
                break
            self._route(text[:at], reasoning, answer)
            self._after_close = self.inside
            self.inside = not self.inside
            text = text[at + len(tag):]
        if final:
            self._route(self._held, reasoning, answer)
            self._held = ""
        return "".join(reasoning), "".join(answer)

    def _route(self, text: str, reasoning: list[str], answer: list[str]) -> None:
        if self.inside:
            reasoning.append(text)
            return
        if self._after_close:
            text = text.lstrip("\n")
            self._after_close = not text
        answer.append(text)


def split_reasoning(text: str, tags: ReasoningTags = ReasoningTags(), inside: bool = False) -> tuple[str, str]:
    """(reasoning, answer) of a whole text."""
    return ReasoningSplitter(tags, inside).feed(text, final=True)


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that begins `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0
