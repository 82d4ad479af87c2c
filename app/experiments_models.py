"""The chat model each configuration of a batch talks to: a GGUF loaded once per file (engine), llama.cpp,
or a fan-out over one or more OpenAI-compatible servers (app/fanout.py)."""
from __future__ import annotations

import logging
import threading

from langchain_core.language_models import BaseChatModel

from prompts.trace import RunInfo

from .backends import DEFAULT_BASE_URL, BackendChoice, chat_model, engine_chat_model
from .experiments import Configuration
from .fanout import FanOutChatModel, RetryPolicy, Server, ServerPool, without_client_retries
from .settings import Settings

log = logging.getLogger(__name__)


class ModelPool:
    """Builds each configuration's model on first use; engines are loaded once per file and shared."""

    def __init__(self, settings: Settings, policy: RetryPolicy | None = None):
        self.settings, self.policy = settings, policy or RetryPolicy()
        self.pools: list[ServerPool] = []  # the fan-out pools made, for their per-server statistics
        self._engines: dict[str | None, object] = {}
        self._lock = threading.Lock()

    def __call__(self, config: Configuration) -> tuple[BaseChatModel, RunInfo]:
        if config.backend == "openai":
            return self._fan_out(config)
        if config.backend == "llamacpp":
            return chat_model(self._choice(config))
        return engine_chat_model(self._engine(config.model or self.settings.model_path), config.sampling_dict)

    def _choice(self, config: Configuration, base_url: str | None = None, model: str | None = None) -> BackendChoice:
        return BackendChoice(config.backend, model or config.model or self.settings.model_path, self.settings.device,
                             self.settings.dtype, config.sampling_dict, base_url=base_url, api_key=self.settings.api_key,
                             engine_options=self.settings.engine_options())

    def _engine(self, path: str | None):
        from engine import load_model

        with self._lock:  # two configurations on the same file share one loaded engine
            if path not in self._engines:
                self._engines[path] = load_model(path, **self.settings.engine_options())
            return self._engines[path]

    def _fan_out(self, config: Configuration) -> tuple[BaseChatModel, RunInfo]:
        """A FanOutChatModel over the configuration's servers; the model name is asked of the first that answers."""
        urls = config.base_urls or (self.settings.base_url or DEFAULT_BASE_URL,)
        name, info, problems = config.model, None, []
        servers = []
        for url in urls:
            try:
                model, info = chat_model(self._choice(config, url, name))
            except ValueError as exc:  # this server does not answer the model list: try the next for the name
                problems.append(str(exc))
                continue
            name = info.model_id
            servers.append(Server(url, without_client_retries(model, self.policy.timeout_s)))
        if info is None:
            raise ValueError("no server answered: " + "; ".join(problems))
        if problems:
            log.warning("left out of rotation from the start: %s", "; ".join(problems))
        pool = ServerPool(servers, self.policy)
        self.pools.append(pool)
        return FanOutChatModel(pool), info
