"""The pipeline past one machine's disk: STORAGE_URL=s3://… on a real SeaweedFS, every service
its own process — gateway, both balancers, a matting and a comparison worker — and NO shared
DATA_DIR: each process has an empty folder of its own, so a file read or written where an
object belongs would fail the job (or show up in the folder). A small job goes in through the
public API, the zip comes back with every cut-out and sheet, the gallery serves files from the
bucket, and deleting the job empties its prefixes."""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from shared.objects import open_store
from shared.settings import Settings
from shared.states import FINAL_JOB_STATES
from tests.support.images import make_zip, photo_bytes
from tests.support.seaweed import S3Server
from tests.support.servers import ProcessServer, free_ports
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

IMAGES = ("shoot/coffee.jpg", "shoot/deep/rocket.jpg", "chelsea.jpg")


@pytest.fixture(scope="module")
def s3_stack(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory,
             ) -> Iterator[tuple[str, dict[str, Path], str]]:
    """(gateway URL, each process's own DATA_DIR, STORAGE_URL)."""
    url = s3_server.storage_url(f"stack-{uuid.uuid4().hex[:10]}")
    names = ("gw", "mapi", "capi", "mw", "cw")
    ports = dict(zip(names, free_ports(*(1 for _ in names)), strict=True))
    dirs = {n: tmp_path_factory.mktemp(f"own-{n}") for n in ports}
    common = {**s3_server.env, "STORAGE_URL": url, "DEFAULT_MODEL": "classical",
              "MATTING_API_URL": f"http://127.0.0.1:{ports['mapi']}",
              "COMPARISON_API_URL": f"http://127.0.0.1:{ports['capi']}", "RESULT_CACHE": "0"}
    logs = tmp_path_factory.mktemp("logs")

    def server(name: str, module: str, args: list[str] | None = None) -> ProcessServer:
        return ProcessServer(module, {**common, "DATA_DIR": str(dirs[name])}, args,
                             port=ports[name], log_dir=logs)

    procs = [
        server("mw", "matting_worker", ["--worker-id", "mw-s3"]),
        server("cw", "comparison_worker", ["--worker-id", "cw-s3"]),
        server("mapi", "matting_api", ["--worker-urls", f"http://127.0.0.1:{ports['mw']}"]),
        server("capi", "comparison_api", ["--worker-urls", f"http://127.0.0.1:{ports['cw']}"]),
        server("gw", "gateway"),
    ]
    started: list[ProcessServer] = []
    try:
        for p in procs:
            started.append(p.start(timeout=180))
        yield procs[-1].url, dirs, url
    finally:
        for p in reversed(started):
            p.stop()


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_a_job_round_trips_through_the_bucket(
        s3_stack: tuple[str, dict[str, Path], str], s3_server: S3Server,
        monkeypatch: pytest.MonkeyPatch) -> None:
    gw, dirs, storage_url = s3_stack
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    store = open_store(Settings(_env_file=None, storage_url=storage_url,  # type: ignore[call-arg]
                                s3_endpoint_url=s3_server.endpoint))
    members = {name: photo_bytes(name.rsplit("/", 1)[-1]) for name in IMAGES}
    with httpx.Client(base_url=gw, timeout=120) as c:
        r = c.post("/upload", content=make_zip(members),
                   headers={"Content-Type": "application/zip"})
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        st = wait_for(lambda: (s := c.get(f"/status/{job_id}").json())["state"]
                      in FINAL_JOB_STATES and s, 300, "job finished", interval=0.5)
        assert st["state"] == "completed", c.get(f"/jobs/{job_id}/tasks").text
        assert st["completed"] == len(IMAGES)

        r = c.get(f"/download/{job_id}")
        assert r.status_code == 200, r.text
        assert int(r.headers["content-length"]) == len(r.content)
        zf = zipfile.ZipFile(io.BytesIO(r.content))
        names = set(zf.namelist())
        for name, data in members.items():
            stem = name.rsplit(".", 1)[0]
            with Image.open(io.BytesIO(zf.read(f"matting_output/{stem}.png"))) as cut:
                assert cut.mode == "RGBA" and cut.size == Image.open(io.BytesIO(data)).size
            assert f"final_results/{stem}_compare.jpg" in names
            # byte for byte the objects the workers wrote
            assert zf.read(f"matting_output/{stem}.png") == store.get(
                f"matting_output/{job_id}/{stem}.png")
        report = json.loads(zf.read("report.json"))
        assert report["summary"]["items"] == len(IMAGES)
        assert store.exists(f"reports/{job_id}/report.json")

        row = c.get(f"/jobs/{job_id}/gallery").json()["tasks"][0]
        sheet = c.get(row["sheet"])
        assert sheet.status_code == 200 and sheet.headers["content-type"] == "image/jpeg"
        assert c.get(f"/jobs/{job_id}/files/final_results/none_compare.jpg").status_code == 404

        # No shared volume: the workers and balancers never touched a file of the job.
        for name in ("mw", "cw", "mapi", "capi"):
            assert [f for f in _files(dirs[name]) if job_id in f] == [], name
        # The gateway keeps its database locally, but no job file.
        assert not [f for f in _files(dirs["gw"])
                    if f.startswith(("input/", "matting_output/", "final_results/"))
                    and job_id in f]

        assert c.delete(f"/jobs/{job_id}").status_code in (200, 202, 204)
    left = [k for area in ("input", "matting_output", "final_results", "reports")
            for k, _ in store.list(f"{area}/{job_id}/")]
    assert left == []
