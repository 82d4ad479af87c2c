"""How big a question's prompt is before it runs, and how far the model has read it while it runs.

The count is of the first model call's whole prompt (template, earlier turns, question) in the
model's chat template; reading it (prefill) is estimated from how fast this model read earlier prompts.
"""
from __future__ import annotations

import html
import threading

NEAR_LIMIT = 0.8  # warn once the prompt and the tokens to generate fill this share of the context
DEFAULT_PREFILL_TOK_S = 300.0  # before any call was measured (the default model on 2 CPU cores reads ~300)
LEARN = 0.3  # weight of the newest measurement


class PrefillRate:
    """Prompt tokens per second this model reads, learned from calls' time to first token."""

    def __init__(self, tokens_per_s: float = DEFAULT_PREFILL_TOK_S):
        self.tokens_per_s = tokens_per_s
        self._lock = threading.Lock()

    def learn(self, prompt_tokens: int, first_token_s: float | None) -> None:
        if first_token_s and prompt_tokens >= 64:  # short prompts measure the first decode step, not reading
            with self._lock:
                self.tokens_per_s += LEARN * (prompt_tokens / first_token_s - self.tokens_per_s)

    def seconds(self, prompt_tokens: int) -> float:
        return prompt_tokens / max(self.tokens_per_s, 1e-3)


def size_note(prompt_tokens: int, context: int, max_tokens: int, turns: int, rate: PrefillRate) -> str:
    """The line under the question: tokens against the context, and a warning near or over it."""
    earlier = f" and {turns} earlier turn{'s' if turns != 1 else ''}" if turns else ""
    facts = (f"{prompt_tokens:,} prompt tokens (template{earlier} included) of the model's {context:,} · "
             f"~{rate.seconds(prompt_tokens):.0f} s to read")
    if prompt_tokens + max_tokens > context:
        return (f'<div class="size-note over" role="alert">⚠ Too long: {facts}; with {max_tokens:,} tokens to generate '
                f'it does not fit. Shorten the question, lower max tokens or clear the conversation.</div>')
    if prompt_tokens + max_tokens > NEAR_LIMIT * context:
        return f'<div class="size-note near">⚠ Near the context limit: {facts}.</div>'
    return f'<div class="size-note">{facts}</div>'


def prefill_progress(prompt_tokens: int, elapsed_s: float, rate: PrefillRate) -> str:
    """A bar for a call that has not produced its first token yet: how much of the prompt is read (estimated)."""
    expected = rate.seconds(prompt_tokens)
    share = min(elapsed_s / expected, 0.99) if expected > 0 else 0.99
    label = (f"reading the prompt: {prompt_tokens:,} tokens · {elapsed_s:.1f} s of ~{expected:.0f} s "
             f"(estimated at {rate.tokens_per_s:.0f} tokens/s)")
    return (f'<div class="prefill"><span>{html.escape(label)}</span>'
            f'<progress max="100" value="{100 * share:.0f}" aria-label="prompt read">{100 * share:.0f}%</progress></div>')
