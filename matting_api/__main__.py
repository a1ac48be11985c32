"""`python -m matting_api [--port N] [--host H] [--worker-urls URL,…]`; default WORKER_URLS."""

from __future__ import annotations

from shared.balancer.entry import api_main
from shared.stages import Stage

if __name__ == "__main__":
    api_main(Stage.MATTING)
