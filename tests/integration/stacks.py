"""A stack with Settings overrides (limits, API key, quotas) for one test module.

The same as conftest's `stack` fixture, but configurable; the faults branch adds an equivalent
`running_stack` to conftest, and this module can go once both have landed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shared.settings import Settings
from shared.stack import health_urls, start_stack, stop_stack, wait_healthy

from .conftest import Stack, free_port

__all__ = ["running_stack"]


@contextmanager
def running_stack(data: Path, **overrides: Any) -> Iterator[Stack]:
    """The whole stack under Supervisor until the block ends (`overrides`: Settings fields)."""
    ports = {n: free_port() for n in ("gw", "mapi", "capi", "mw", "cw")}
    fields: dict[str, Any] = {
        "data_dir": data,
        "gateway_port": ports["gw"],
        "matting_api_port": ports["mapi"],
        "comparison_api_port": ports["capi"],
        "matting_api_url": f"http://127.0.0.1:{ports['mapi']}",
        "comparison_api_url": f"http://127.0.0.1:{ports['capi']}",
        "matting_worker_port": ports["mw"],
        "comparison_worker_port": ports["cw"],
        "matting_workers": 1,
        "comparison_workers": 1,
        "models_dir": data / "models",
        **overrides,
    }
    settings = Settings(**fields)
    conf = data / "supervisord.conf"
    proc = start_stack(settings, conf=conf, quiet=True)
    try:
        wait_healthy(health_urls(settings), timeout=240)
        url = f"http://127.0.0.1:{settings.gateway_port}"
        yield Stack(url=url, data_dir=data, conf=conf, settings=settings, proc=proc)
    finally:
        stop_stack(proc)
