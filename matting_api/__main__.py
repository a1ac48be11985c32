"""`python -m matting_api [--port N] [--host H] [--worker-urls URL,…]`; default WORKER_URLS."""

from __future__ import annotations

from shared.roles import MATTING, api_main

if __name__ == "__main__":
    api_main(MATTING)
