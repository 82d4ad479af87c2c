"""One chat model over several OpenAI-compatible servers (vLLM, TGI, llama.cpp server, `reason serve`).

Each call goes to the live server with the fewest calls in flight, within a per-server limit. A 429, a 5xx,
a timeout or a lost connection is retried with exponential backoff and jitter (tenacity), on another
server when there is one; a server that fails `dead_after` times in a row is taken out of rotation for
the rest of the batch. When every server is out, calls raise ServersExhausted, and `--resume` later
runs those questions again (runs are keyed by question, not by server).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import openai
from langchain_core.language_models import BaseChatModel
from langchain_core.outputs import ChatResult
from pydantic import PrivateAttr
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

log = logging.getLogger(__name__)

# Failures worth another try: the server is busy (429), broken for now (5xx) or unreachable (includes timeouts).
TRANSIENT = (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError)
# The error names a run stores for those (openai's, LangChain's subclasses of them, a plain unreachable socket):
# `--resume` runs them again.
TRANSIENT_ERROR_NAMES = ("RateLimitError", "InternalServerError", "APIConnectionError", "APITimeoutError",
                         "OpenAIRateLimitError", "OpenAIAPIError", "OpenAIConnectionError", "OpenAITimeoutError",
                         "ServersExhausted", "ConnectionError", "ConnectionRefusedError", "TimeoutError")


class ServersExhausted(RuntimeError):
    """Every server is out of rotation: the batch stops, and `--resume` continues it later."""


@dataclass(frozen=True)
class RetryPolicy:
    per_server: int = 4  # calls in flight on one server at a time
    attempts: int = 6  # tries per call, across servers
    backoff_s: float = 0.5  # the first wait; doubled each retry, with jitter, up to max_backoff_s
    max_backoff_s: float = 10.0
    dead_after: int = 3  # consecutive failures (not 429s) that take a server out of rotation
    timeout_s: float = 300.0  # one request


@dataclass
class Server:
    url: str
    model: BaseChatModel
    in_flight: int = 0
    requests: int = 0
    failures: int = 0
    failures_in_a_row: int = 0
    alive: bool = True
    last_error: str = ""

    def stats(self) -> dict:
        return {"url": self.url, "requests": self.requests, "failures": self.failures, "alive": self.alive,
                "last_error": self.last_error}


@dataclass
class ServerPool:
    """The servers and who may call which; all state changes under one condition variable."""

    servers: list[Server]
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    _ready: threading.Condition = field(default_factory=threading.Condition)

    def acquire(self, avoid: Server | None = None) -> Server:
        """A live server with a free slot (not `avoid` while another lives), waiting for one to free up."""
        with self._ready:
            while True:
                alive = [s for s in self.servers if s.alive]
                if not alive:
                    raise ServersExhausted("every server is out of rotation: " +
                                           "; ".join(f"{s.url} ({s.last_error})" for s in self.servers))
                choices = [s for s in alive if s is not avoid] or alive
                free = [s for s in choices if s.in_flight < self.policy.per_server]
                if free:
                    server = min(free, key=lambda s: (s.in_flight, s.requests))
                    server.in_flight += 1
                    server.requests += 1
                    return server
                self._ready.wait()

    def release(self, server: Server, failure: BaseException | None = None) -> None:
        """Free the slot; count a failure (a 429 only says 'busy'), and retire a server that keeps failing."""
        with self._ready:
            server.in_flight -= 1
            if failure is None:
                server.failures_in_a_row = 0
            else:
                server.failures += 1
                server.last_error = f"{type(failure).__name__}: {failure}"[:200]
                if not isinstance(failure, openai.RateLimitError):
                    server.failures_in_a_row += 1
                if server.alive and server.failures_in_a_row >= self.policy.dead_after:
                    server.alive = False
                    log.warning("%s taken out of rotation after %d failures in a row (%s)", server.url,
                                server.failures_in_a_row, server.last_error)
            self._ready.notify_all()

    def call(self, messages, stop, **kwargs) -> ChatResult:
        """One chat call, retried with backoff on transient failures, preferring another server after one."""
        tried: list[Server] = []
        retrying = Retrying(stop=stop_after_attempt(self.policy.attempts), reraise=True,
                            wait=wait_exponential_jitter(multiplier=self.policy.backoff_s, max=self.policy.max_backoff_s,
                                                         jitter=self.policy.backoff_s),
                            retry=retry_if_exception(lambda exc: isinstance(exc, TRANSIENT)))
        for attempt in retrying:
            with attempt:
                server = self.acquire(avoid=tried[-1] if tried else None)
                tried.append(server)
                try:
                    result = server.model._generate(messages, stop=stop, **kwargs)
                except TRANSIENT as exc:
                    self.release(server, exc)
                    raise
                except BaseException:
                    self.release(server)  # the server answered; the request itself was refused
                    raise
                self.release(server)
                return result
        raise AssertionError("unreachable: tenacity returns or re-raises")

    def stats(self) -> list[dict]:
        with self._ready:
            return [s.stats() for s in self.servers]


class FanOutChatModel(BaseChatModel):
    """A LangChain chat model whose every call is one ServerPool.call."""

    _pool: ServerPool = PrivateAttr()

    def __init__(self, pool: ServerPool, **kwargs):
        super().__init__(**kwargs)
        self._pool = pool

    @property
    def pool(self) -> ServerPool:
        return self._pool

    @property
    def _llm_type(self) -> str:
        return "openai-fan-out"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        return self._pool.call(messages, stop, **kwargs)


def without_client_retries(model, timeout_s: float):
    """A ChatOpenAI whose client neither retries nor waits long on its own: the pool decides both."""
    model.root_client = model.root_client.with_options(max_retries=0, timeout=timeout_s)
    model.client = model.root_client.chat.completions
    return model
