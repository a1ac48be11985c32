"""schemathesis against the internal plane: a real matting balancer in front of a real matting
worker (the `identity` engine), both behind INTERNAL_TOKEN. With the token, with a wrong one
and with none, no answer is a 5xx and every refusal carries a JSON `detail`; without the
token nothing is reached at all."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from matting_worker.app import create_app as create_worker_app
from shared.balancer.entry import create_api_app
from shared.settings import Settings
from shared.stages import Stage
from tests.support.fuzz import fuzz_service
from tests.support.servers import INTERNAL_HEADERS, INTERNAL_TOKEN, ThreadServer, free_ports
from tests.support.waiting import wait_for

SENT = {
    "token": INTERNAL_HEADERS,
    "wrong-token": {"Authorization": "Bearer not-the-token"},
    "none": {},
}


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    data_dir = tmp_path_factory.mktemp("internal-fuzz")
    api_port, worker_port = free_ports(1, 1)
    s = Settings(_env_file=None, data_dir=data_dir, internal_token=INTERNAL_TOKEN,  # type: ignore[call-arg]
                 default_model="identity", matting_api_url=f"http://127.0.0.1:{api_port}",
                 host="127.0.0.1", internal_host="127.0.0.1")
    worker_url = f"http://127.0.0.1:{worker_port}"
    worker = create_worker_app(s, "fuzz-worker", worker_port, "127.0.0.1")
    balancer = create_api_app(Stage.MATTING, s, api_port, [worker_url])
    with ThreadServer(worker, port=worker_port) as w, ThreadServer(balancer, port=api_port) as b:
        wait_for(lambda: httpx.get(f"{w.url}/health").status_code == 200, 60, what="worker")
        yield b.url, w.url, data_dir


@pytest.mark.parametrize("sent", list(SENT))
@pytest.mark.parametrize("service", ["balancer", "worker"])
def test_internal_services_never_fail_and_always_explain(
        plane: tuple[str, str, Path], service: str, sent: str) -> None:
    balancer, worker, data_dir = plane
    url = balancer if service == "balancer" else worker
    before = sorted(p.relative_to(data_dir) for p in data_dir.rglob("*") if p.is_file())
    codes = fuzz_service(url, SENT[sent], schema_headers=INTERNAL_HEADERS)
    if sent != "token":
        # nothing behind the token is reached: only /health (open, it tells nothing) answers
        assert {c for path, c in codes if path != "/health"} == {401}, sorted(set(codes))
    after = sorted(p.relative_to(data_dir) for p in data_dir.rglob("*") if p.is_file()
                   if "logs" not in p.parts)
    # random requests, even with the token, write nothing: no input exists under any job
    assert after == [p for p in before if "logs" not in p.parts]
