"""`python -m matting_api [--port N] [--host H] [--worker-urls URL,…]`; default WORKER_URLS."""

from __future__ import annotations

import argparse

from shared.logs import setup_logging
from shared.serve import serve
from shared.settings import get_settings

from .app import SERVICE, create_app


def main(argv: list[str] | None = None) -> None:
    s = get_settings()
    p = argparse.ArgumentParser(prog="matting_api", description=__doc__)
    p.add_argument("--port", type=int, default=s.matting_api_port)
    p.add_argument("--host", default=s.host)
    p.add_argument("--worker-urls", default=None, help="comma-separated; overrides WORKER_URLS")
    args = p.parse_args(argv)
    urls = None
    if args.worker_urls is not None:
        urls = [u.strip().rstrip("/") for u in args.worker_urls.split(",") if u.strip()]
    setup_logging(SERVICE, s)
    serve(create_app(s, args.port, urls), args.host, args.port, SERVICE)


if __name__ == "__main__":
    main()
