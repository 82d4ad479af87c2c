"""`python -m app.ui [--host H] [--port P] [--model GGUF]`: serve the web app (what `reason ui` runs)."""
from __future__ import annotations

import argparse
import logging

from ..settings import Settings
from ..telemetry import install
from .server import launch


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m app.ui")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--model", default=None)
    parser.add_argument("--auth", default=None, help="USER:PASSWORD")
    parser.add_argument("--no-metrics", action="store_true", help="Do not serve Prometheus metrics at /metrics.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    auth = tuple(args.auth.split(":", 1)) if args.auth else None
    settings = Settings.from_env()
    install(settings)  # runs become OpenTelemetry spans when OTEL_EXPORTER_OTLP_* names a collector
    launch(settings, args.host, args.port, args.model, auth, metrics=not args.no_metrics)


if __name__ == "__main__":
    main()
