"""`python -m app.ui [--host H] [--port P] [--model GGUF]`: serve the web app (what `reason ui` runs)."""
from __future__ import annotations

import argparse
import logging

from ..settings import Settings
from .server import launch


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m app.ui")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--model", default=None)
    parser.add_argument("--auth", default=None, help="USER:PASSWORD")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    auth = tuple(args.auth.split(":", 1)) if args.auth else None
    launch(Settings.from_env(), args.host, args.port, args.model, auth)


if __name__ == "__main__":
    main()
