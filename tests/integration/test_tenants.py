"""Tenants on the real stack under Supervisor: API_KEYS and ADMIN_KEY reach the gateway process
through supervisord's environment (never its config file), and one tenant's job runs to the end
while another tenant can neither see, download nor cancel it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.images import make_zip, png_set
from tests.support.stack import Stack, running_stack

pytestmark = pytest.mark.integration

KEY_A = "stack-tenant-a-91d3"
KEY_B = "stack-tenant-b-4e07"
ADMIN = "stack-admin-c5f2"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data: Path = tmp_path_factory.mktemp("tenants") / "data"
    data.mkdir()
    with running_stack(data, api_keys=f"a:{KEY_A},b:{KEY_B}", admin_key=ADMIN,
                       matting_workers=1, comparison_workers=1) as s:
        yield s


def client(stack: Stack, key: str) -> httpx.Client:
    return httpx.Client(base_url=stack.url, timeout=60, headers={"Authorization": f"Bearer {key}"})


def test_a_job_of_one_tenant_is_invisible_to_the_other(stack: Stack) -> None:
    assert KEY_A not in stack.conf.read_text() and ADMIN not in stack.conf.read_text()
    with client(stack, KEY_A) as a, client(stack, KEY_B) as b, client(stack, ADMIN) as admin:
        r = a.post("/upload", params={"model": "identity"}, content=make_zip(png_set(2)),
                   headers={"Content-Type": "application/zip"})
        assert r.status_code == 202, r.text
        job = r.json()["job_id"]
        deadline = time.time() + 240
        while (st := a.get(f"/status/{job}").json())["state"] in ("ingesting", "running"):
            assert time.time() < deadline, st
            time.sleep(0.5)
        assert st["state"] == "completed", st
        for method, path in [("GET", f"/status/{job}"), ("GET", f"/download/{job}"),
                             ("GET", f"/jobs/{job}/tasks"), ("DELETE", f"/jobs/{job}")]:
            r = b.request(method, path)
            assert r.status_code == 404 and r.json() == {"detail": f"unknown job {job!r}"}, path
        assert b.get("/jobs").json()["total"] == 0
        assert [j["job_id"] for j in a.get("/jobs").json()["jobs"]] == [job]
        assert [j["job_id"] for j in admin.get("/jobs").json()["jobs"]] == [job]
        assert a.get(f"/download/{job}").status_code == 200
        assert httpx.get(f"{stack.url}/jobs", timeout=30).status_code == 401
