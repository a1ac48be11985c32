"""`python -m comparison_worker [--port N] [--worker-id ID] [--host H]`."""

from __future__ import annotations

from shared.roles import COMPARISON, worker_main

if __name__ == "__main__":
    worker_main(COMPARISON)
