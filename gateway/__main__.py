"""`python -m gateway [--host H] [--port N]`: the gateway, by default on HOST:GATEWAY_PORT."""

from __future__ import annotations

import argparse
import importlib
import logging
from typing import Any

import uvicorn

from shared.settings import get_settings

from .app import create_app

SERVICE = "gateway"


def _shared(module: str, name: str) -> Any:
    """A helper of the shared library when this checkout has it (logging, serving)."""
    try:
        return getattr(importlib.import_module(f"shared.{module}"), name)
    except (ModuleNotFoundError, AttributeError):
        return None


def main(argv: list[str] | None = None) -> None:
    settings = get_settings()
    p = argparse.ArgumentParser(prog="gateway", description=__doc__)
    p.add_argument("--host", default=settings.host)
    p.add_argument("--port", type=int, default=settings.gateway_port)
    args = p.parse_args(argv)
    app = create_app(settings)
    setup_logging = _shared("logs", "setup_logging")
    if setup_logging is not None:
        setup_logging(SERVICE, settings)
    else:
        logging.basicConfig(level=settings.log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    add_request_logging = _shared("logs", "add_request_logging")
    if add_request_logging is not None:
        add_request_logging(app, SERVICE)
    serve = _shared("serve", "serve")
    if serve is not None:
        serve(app, args.host, args.port, SERVICE)
    else:
        uvicorn.run(app, host=args.host, port=args.port, log_level=settings.log_level.lower())


if __name__ == "__main__":
    main()
