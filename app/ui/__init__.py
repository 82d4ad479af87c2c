"""The web app (Gradio): chat with a strategy, prompt templates, batches, run history and the model."""
from .server import build_app, exposure_warning, launch

__all__ = ["build_app", "exposure_warning", "launch"]
