"""The web app: one Gradio Blocks with a tab per page, over one loaded model and the trace store."""
from __future__ import annotations

import logging
from importlib.resources import files

import gradio as gr
from starlette.routing import Route

from engine.serving.metrics import engine_metrics
from engine.serving.server import is_loopback

from ..settings import Settings
from . import batch_page, chat, experiments_page, history, model_page, templates_page
from .batches import BatchManager
from .live_run import quiet_stop_warnings
from .state import AppState

log = logging.getLogger(__name__)

TITLE = "Reasoning Studio"
ASSETS = files("app.ui")  # page.css (contrast, outcome colours, trace cards), page.js (live regions)


def build_app(settings: Settings, model_path: str | None = None, state: AppState | None = None) -> gr.Blocks:
    """The app's Blocks; loads the model once (the default model when no path is given)."""
    state = state or AppState.open(settings, model_path)
    quiet_stop_warnings()
    manager = BatchManager(state)
    with gr.Blocks(title=TITLE) as app:
        gr.Markdown(f"# {TITLE}\nLocal reasoning: direct, chain-of-thought, PAL and ReAct; every run is stored.")
        with gr.Tabs():
            with gr.Tab("Chat", id="chat") as chat_tab:
                strategy, template = chat.build(state)
            with gr.Tab("Prompt templates", id="templates") as templates_tab:
                tpl_inputs, tpl_outputs = templates_page.build(state)
            with gr.Tab("Batch", id="batch") as batch_tab:
                batch_inputs, batch_outputs, batch_refresh = batch_page.build(manager)
            with gr.Tab("Experiments", id="experiments") as experiments_tab:
                exp_inputs, exp_outputs, exp_refresh = experiments_page.build(state)
            with gr.Tab("History", id="history") as history_tab:
                hist_inputs, hist_outputs = history.build(state)
            with gr.Tab("Model", id="model") as model_tab:
                info, status = model_page.build(state, manager)
        # Pages show what other pages (or other sessions) changed when the page loads and when a tab opens.
        refresh_chat = (lambda s, t: chat.refresh_templates(state, s, t), [strategy, template], template)
        refresh_templates = (lambda *a: templates_page.refresh(state, *a), tpl_inputs, tpl_outputs)
        refresh_batches = (batch_refresh, batch_inputs, batch_outputs)
        refresh_experiments = (exp_refresh, exp_inputs, exp_outputs)
        for refresh in (refresh_chat, refresh_templates, refresh_batches, refresh_experiments):
            app.load(*refresh)
        chat_tab.select(*refresh_chat)
        templates_tab.select(*refresh_templates)
        batch_tab.select(*refresh_batches)
        experiments_tab.select(*refresh_experiments)
        history_tab.select(lambda *a: history.refresh(state, *a), hist_inputs, hist_outputs)
        model_tab.select(lambda: (model_page.describe(state), model_page.engine_status(state, manager)), None,
                         [info, status])
    app.reason_state = state  # for tests and embedding
    return app


def exposure_warning(host: str, auth) -> str | None:
    """The warning to give when the app is reachable from other machines without a password."""
    if is_loopback(host) or auth:
        return None
    return (f"serving on {host} without --auth: anyone who can reach this machine can run the model "
            f"and read every stored run. Use --auth USER:PASSWORD or --host 127.0.0.1.")


def launch(settings: Settings, host: str = "127.0.0.1", port: int = 7860, model_path: str | None = None,
           auth: tuple[str, str] | None = None, block: bool = True, warn: bool = True, metrics: bool = True) -> gr.Blocks:
    """Build and serve the app; blocks until stopped unless `block` is False.

    `warn=False` when the caller (the CLI) has already printed the exposure warning itself.
    `metrics`: also serve the engine's Prometheus metrics at GET /metrics (outside the app's login, as
    `reason serve` does: counts only, no text of any run).
    """
    warning = exposure_warning(host, auth)
    if warning and warn:
        log.warning(warning)
    app = build_app(settings, model_path)
    app.queue(default_concurrency_limit=4)
    routes = [metrics_route(app.reason_state)] if metrics else []
    app.launch(server_name=host, server_port=port, auth=auth, prevent_thread_lock=not block, quiet=True,
               show_error=True, allowed_paths=[str(settings.home / "batches")], footer_links=[],
               css=(ASSETS / "page.css").read_text(encoding="utf-8"), js=(ASSETS / "page.js").read_text(encoding="utf-8"),
               app_kwargs={"routes": routes})  # ahead of Gradio's own routes on its FastAPI app
    return app


def metrics_route(state: AppState) -> Route:
    """GET /metrics for the engine the app has loaded now (the Model page can switch it)."""
    return Route("/metrics", engine_metrics(lambda: state.engine), methods=["GET"])
