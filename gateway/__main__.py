"""`python -m gateway [--host H] [--port N]`: the gateway, by default on HOST:GATEWAY_PORT."""

from __future__ import annotations

import argparse
import ipaddress
import logging

from gateway.app import create_app
from shared.logs import add_request_logging, setup_logging
from shared.serve import serve
from shared.settings import Settings, get_settings

__all__ = ["exposure_warning", "is_loopback", "main", "token_warning"]

SERVICE = "gateway"
log = logging.getLogger("gateway")


def is_loopback(host: str) -> bool:
    """Whether a bind address is reachable from this machine only."""
    name = host.strip().strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name or a wildcard: reachable from elsewhere


def exposure_warning(host: str, settings: Settings) -> str | None:
    """The start-up warning for a gateway that anyone on the network may use: bound beyond
    loopback with no key configured. None when it is loopback-only or asks for keys."""
    if is_loopback(host) or settings.key_table.configured:
        return None
    return (f"the gateway listens on {host}, beyond loopback, and NO API KEY is set: anyone who "
            "can reach it may upload, list, download and delete every job. Set API_KEY, "
            "API_KEYS or API_KEYS_FILE (and ADMIN_KEY), or HOST=127.0.0.1.")


def token_warning(settings: Settings) -> str | None:
    """The start-up warning for a gateway with no INTERNAL_TOKEN: its stage calls would be
    refused by every balancer (401), so the stages would wait for ever instead of failing."""
    if settings.internal_token:
        return None
    return ("INTERNAL_TOKEN is not set: the balancers refuse the gateway's stage calls, so no "
            "task will move. Set the same INTERNAL_TOKEN for every service (`make run` makes "
            "one in DATA_DIR/internal_token).")


def main(argv: list[str] | None = None) -> None:
    # Only the keys' hashes stay in this process's settings (`Settings.without_raw_keys`).
    settings = get_settings().without_raw_keys()
    get_settings.cache_clear()
    p = argparse.ArgumentParser(prog="gateway", description=__doc__)
    p.add_argument("--host", default=settings.host)
    p.add_argument("--port", type=int, default=settings.gateway_port)
    args = p.parse_args(argv)
    setup_logging(SERVICE, settings)
    for warning in (exposure_warning(args.host, settings), token_warning(settings)):
        if warning:
            log.warning("WARNING: %s", warning)
    app = create_app(settings)
    add_request_logging(app, SERVICE)
    serve(app, args.host, args.port, SERVICE)


if __name__ == "__main__":
    main()
