"""`python -m gateway [--host H] [--port N]`: the gateway, by default on HOST:GATEWAY_PORT.

`python -m gateway migrate`: migrate the task database (DATABASE_URL) to the newest schema
and exit (a Kubernetes Job before a release's gateways start; they would migrate at start
anyway, one at a time under a lock, so the Job is for doing it once, visibly)."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import sys

from gateway.app import create_app
from shared.heap import keep_heap
from shared.logs import add_request_logging, setup_logging
from shared.serve import serve
from shared.settings import Settings, get_settings
from shared.timing import GATEWAY_SWITCH_INTERVAL_S

__all__ = ["exposure_warning", "is_loopback", "main", "migrate", "token_warning"]

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


def migrate(settings: Settings) -> None:
    """Migrate DATABASE_URL to head (`gateway.db.migrations`), adopting a pre-Alembic one."""
    from gateway.db.database import Database

    async def run() -> None:
        db = await Database.connect(settings.database)
        await db.close()

    asyncio.run(run())
    log.info("the task database is at the newest schema")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["migrate"]:
        settings = get_settings()
        setup_logging(SERVICE, settings)
        migrate(settings)
        return
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
    # Upload bodies reuse the same heap pages batch after batch (README, "Upload speed").
    if not keep_heap():
        log.info("not glibc: the heap thresholds are the allocator's own")
    # The event loop answers requests; ingest and database threads must not keep it waiting
    # for the GIL a default 5 ms turn each (shared.timing).
    sys.setswitchinterval(GATEWAY_SWITCH_INTERVAL_S)
    app = create_app(settings)
    add_request_logging(app, SERVICE)
    serve(app, args.host, args.port, SERVICE)


if __name__ == "__main__":
    main()
