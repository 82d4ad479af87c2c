"""The Model page: what is loaded (architecture, size, types, context, chat template); switch to another GGUF;
the engine's queue and the OpenAI-compatible server beside the app."""
from __future__ import annotations

import logging

import gradio as gr
import httpx

from .batches import BatchManager
from .render import fenced
from .state import AppState

log = logging.getLogger(__name__)


def describe(state: AppState) -> str:
    """The loaded model's facts as Markdown."""
    engine = state.engine
    info = engine.info
    types = ", ".join(f"{name} ×{count}" for name, count in info["tensor_types"].items())
    template = engine.chat_template
    source = "LLaMA-2 [INST] fallback (the file has none)" if template.is_fallback else "from the file"
    rows = [("file", f"`{info['path']}`"), ("name", info["name"]), ("architecture", info["architecture"]),
            ("parameters", f"{info['parameters']:,}"), ("quantization / tensor types", types),
            ("context length", f"{info['context_length']:,}"),
            ("vocabulary", f"{info['vocab_kind']} ({info['vocab_size']:,} tokens)"),
            ("device / dtype / weights", f"{info['device']} / {info['dtype']} / {info.get('weights', 'dense')}"),
            ("resident weights", f"{info.get('resident_mb', '?')} MiB"),
            ("KV cache", f"{info.get('kv_cache_mb', '?')} MiB budget, blocks of {info.get('kv_block_size', '?')} tokens"),
            ("chat template", source)]
    table = "| | |\n| --- | --- |\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"{table}\n\n<details><summary>chat template source</summary>\n\n{fenced(template.source, 'jinja')}\n\n</details>"


def engine_status(state: AppState, manager: BatchManager) -> str:
    """The scheduler's queue and KV pool, and how many batches run."""
    stats = state.engine.stats()
    batches = sum(manager.is_running(b) for b in list(manager.running))
    return (f"engine: **{stats['running']}** sequences decoding, **{stats['waiting']}** requests waiting · "
            f"KV blocks: **{stats['kv_blocks_in_use']}** in use, {stats['kv_blocks_cached']} cached prefixes, "
            f"{stats['kv_blocks_total']} total · batches running: **{batches}**\n\n"
            f"{server_status(state.settings.base_url, state.settings.api_key)}")


def server_status(base_url: str | None = None, api_key: str | None = None) -> str:
    """The OpenAI-compatible server beside the app (--base-url, else where `reason serve` listens), probed now.

    Any such server lists its models at /v1/models (given the key); ours also reports its queue at /health.
    """
    from ..backends import DEFAULT_BASE_URL

    url = (base_url or DEFAULT_BASE_URL).rstrip("/")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        reply = httpx.get(f"{url}/models", headers=headers, timeout=1.0).raise_for_status()
        models = ", ".join(f"`{model['id']}`" for model in reply.json()["data"]) or "no model"
    except httpx.HTTPStatusError as exc:
        return f"OpenAI-compatible server: `{url}` answers HTTP {exc.response.status_code} (check --api-key)"
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return f"OpenAI-compatible server: not running at `{url}` (start one with `reason serve`)"
    return f"OpenAI-compatible server: **{url}** serving {models}{_queue(url)}"


def _queue(url: str) -> str:
    """' · queue N · KV blocks in use M' from our server's /health; empty for servers without one."""
    try:
        health = httpx.get(url.removesuffix("/v1") + "/health", timeout=1.0).json()
        return f" · queue {health['queue_depth']} · KV blocks in use {health['kv_blocks_in_use']}"
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return ""


def switch(state: AppState, manager: BatchManager, path: str):
    """Load another GGUF; a wrong path leaves the current model in place and says why."""
    from engine import ModelFileError

    if not path or not path.strip():
        return "**Give the path of a .gguf file.**", describe(state), engine_status(state, manager)
    try:
        state.load(path.strip())
    except (ModelFileError, ValueError, OSError) as exc:
        return f"**Not loaded** (the current model stays): {exc}", describe(state), engine_status(state, manager)
    return f"✅ loaded `{path.strip()}`", describe(state), engine_status(state, manager)


def build(state: AppState, manager: BatchManager) -> tuple[gr.Markdown, gr.Markdown]:
    """The Model tab; returns (info, status) so the server can refresh them when the tab opens."""
    info = gr.Markdown(describe(state), elem_id="model-info")
    status = gr.Markdown(engine_status(state, manager), elem_id="model-status")
    with gr.Row():
        path = gr.Textbox(label="Switch to another GGUF (path on the server)", elem_id="model-path", scale=4)
        load = gr.Button("Load model", variant="primary", elem_id="model-load")
        refresh = gr.Button("Refresh status", elem_id="model-refresh")
    message = gr.Markdown("", elem_id="model-message")
    load.click(lambda p: switch(state, manager, p), path, [message, info, status])
    refresh.click(lambda: (describe(state), engine_status(state, manager)), None, [info, status])
    return info, status
