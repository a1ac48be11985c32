"""`python -m gateway`: the gateway on HOST:GATEWAY_PORT."""

from __future__ import annotations

import importlib
import logging

import uvicorn

from shared.settings import get_settings

from .app import create_app


def main() -> None:
    settings = get_settings()
    app = create_app(settings)
    try:
        serve = importlib.import_module("shared.serve").serve
    except (ModuleNotFoundError, AttributeError):
        logging.basicConfig(level=settings.log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        uvicorn.run(app, host=settings.host, port=settings.gateway_port,
                    log_level=settings.log_level.lower())
    else:
        serve(app, settings.host, settings.gateway_port, "gateway")


if __name__ == "__main__":
    main()
