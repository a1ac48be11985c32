"""Fixtures: real SQLite files, a real stage server over HTTP, the gateway under uvicorn
(the helpers they use are in tests/support/gateway.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from shared.storage import Storage
from tests.support.gateway import FAST, Gateway, StageServer, make_settings
from tests.support.servers import ThreadServer


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    Storage(d).ensure_layout()
    return d


@pytest.fixture
def stage_server(data_dir: Path) -> Iterator[StageServer]:
    st = StageServer(data_dir)
    with ThreadServer(st.app()) as srv:
        st.url = srv.url
        yield st


@pytest.fixture
def start_gateway(data_dir: Path) -> Iterator[Callable[..., Gateway]]:
    """`start_gateway(stage_url, http=…, **settings)`: the real gateway app under uvicorn, in a
    thread (`http`: uvicorn's protocol, e.g. the services' own `shared.serve.HttpProtocol`)."""
    stack = contextlib.ExitStack()

    def start(stage_url: str = "http://127.0.0.1:9", http: Any = "auto", **kw: Any) -> Gateway:
        settings = make_settings(data_dir, stage_url, **kw)
        srv = stack.enter_context(ThreadServer(create_app(settings, **FAST), http=http))
        client = stack.enter_context(httpx.Client(base_url=srv.url, timeout=30))
        return Gateway(srv.url, settings, Storage(data_dir), client)

    with stack:
        yield start
