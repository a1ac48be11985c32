"""`python -m comparison_worker [--port 9101] [--worker-id comparison-worker-1] [--host …]`."""

from __future__ import annotations

import argparse

from shared.settings import get_settings
from shared.worker import configure_threads


def main(argv: list[str] | None = None) -> None:
    s = get_settings()
    p = argparse.ArgumentParser(prog="comparison_worker", description=__doc__)
    p.add_argument("--port", type=int, default=s.comparison_worker_port)
    p.add_argument("--host", default=s.host)
    p.add_argument("--worker-id", default="")
    args = p.parse_args(argv)
    configure_threads(s)  # before the engines import numpy/cv2/torch

    from shared.logs import setup_logging
    from shared.serve import serve

    from .app import create_app

    wid = args.worker_id or s.worker_id or f"comparison-{args.port}"
    setup_logging(wid, s)
    serve(create_app(s, wid, args.port, args.host), args.host, args.port, wid)


if __name__ == "__main__":
    main()
