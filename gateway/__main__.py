"""`python -m gateway [--host H] [--port N]`: the gateway, by default on HOST:GATEWAY_PORT."""

from __future__ import annotations

import argparse

from gateway.app import create_app
from shared.logs import add_request_logging, setup_logging
from shared.serve import serve
from shared.settings import get_settings

SERVICE = "gateway"


def main(argv: list[str] | None = None) -> None:
    settings = get_settings()
    p = argparse.ArgumentParser(prog="gateway", description=__doc__)
    p.add_argument("--host", default=settings.host)
    p.add_argument("--port", type=int, default=settings.gateway_port)
    args = p.parse_args(argv)
    setup_logging(SERVICE, settings)
    app = create_app(settings)
    add_request_logging(app, SERVICE)
    serve(app, args.host, args.port, SERVICE)


if __name__ == "__main__":
    main()
