"""`mattepipe` commands: help, the stack's config, the demo archive, and the demo's whole
flow against a stand-in gateway (a real HTTP server in this process speaking the public API;
the real services are exercised by the integration suite)."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response
from typer.testing import CliRunner

from shared.cli import app
from shared.demo import SAMPLE_FOLDERS, build_demo_archive, sample_images, summarize_zip

runner = CliRunner()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "stack" in result.output and "demo" in result.output


def test_stack_print_config_follows_options_and_env(tmp_path: Path) -> None:
    result = runner.invoke(app, ["stack", "--print-config", "--comparison-workers", "2",
                                 "--data-dir", str(tmp_path)], env={"MATTING_WORKERS": "3"})
    assert result.exit_code == 0, result.output
    programs = [ln for ln in result.output.splitlines() if ln.startswith("[program:")]
    assert len(programs) == 3 + 2 + 3
    assert "[program:comparison-worker-2]" in programs
    assert f"DATA_DIR=\"{tmp_path.resolve()}\"" in result.output


def test_stack_refuses_bad_settings() -> None:
    result = runner.invoke(app, ["stack", "--print-config"], env={"GPU_MEMORY_FRACTION": "3"})
    assert result.exit_code == 2
    assert "gpu_memory_fraction" in result.output


def test_demo_archive_is_a_nested_tree_of_every_sample(tmp_path: Path) -> None:
    samples = sample_images()
    assert len(samples) >= 6
    names = build_demo_archive(tmp_path / "d.zip")
    assert len(names) == len(samples)
    assert "demo/animals/cats/chelsea.jpg" in names
    assert len({n.rsplit("/", 1)[0] for n in names}) >= 4  # several folders, some nested
    with zipfile.ZipFile(tmp_path / "d.zip") as zf:
        for img in samples:
            member = f"demo/{SAMPLE_FOLDERS.get(img.stem, 'other')}/{img.name}"
            assert zf.read(member) == img.read_bytes()


def test_demo_refuses_a_taken_port_and_starts_nothing(tmp_path: Path) -> None:
    with socket.socket() as busy:  # accepts connections, never answers: not a gateway
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = runner.invoke(app, ["demo", "--data-dir", str(tmp_path), "--out",
                                     str(tmp_path / "r.zip")], env={"GATEWAY_PORT": str(port)})
    assert result.exit_code == 2
    assert "is taken" in result.output
    assert not (tmp_path / "r.zip").exists()


def stand_in_gateway(final_state: str) -> FastAPI:
    """Answers like the gateway: a job per upload that finishes after two polls."""
    api = FastAPI()
    jobs: dict[str, dict[str, Any]] = {}

    @api.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @api.post("/upload", status_code=202)
    async def upload(request: Request, filename: str, model: str = "classical") -> Any:
        if request.headers.get("content-type") != "application/zip":
            raise HTTPException(415, "zip expected")
        with zipfile.ZipFile(io.BytesIO(await request.body())) as zf:
            names = [n for n in zf.namelist() if n.endswith(".jpg")]
        jobs["j1"] = {"names": names, "polls": 0, "model": model}
        return {"job_id": "j1", "status_url": "/status/j1", "download_url": "/download/j1"}

    @api.get("/status/{job_id}")
    def status(job_id: str) -> dict[str, Any]:
        if job_id not in jobs:
            raise HTTPException(404, "unknown job")
        job = jobs[job_id]
        job["polls"] += 1
        n, done = len(job["names"]), job["polls"] >= 3
        return {"job_id": job_id, "state": final_state if done else "running", "total": n,
                "completed": n if done else 1, "failed": 0, "rejected": 0,
                "progress": 100.0 if done else 10.0}

    @api.get("/download/{job_id}")
    def download(job_id: str) -> Response:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for name in jobs[job_id]["names"]:
                stem = name.removesuffix(".jpg")
                zf.writestr(f"matting_output/{stem}.png", b"png")
                zf.writestr(f"final_results/{stem}_compare.jpg", b"jpg")
            zf.writestr("report.json", json.dumps({"job_id": job_id, "summary": {}, "items": [
                {"path": n, "state": "completed", "error": None} for n in jobs[job_id]["names"]]}))
            zf.writestr("index.html", "<html></html>")
        return Response(buf.getvalue(), media_type="application/zip")

    return api


@pytest.fixture
def gateway(request: pytest.FixtureRequest) -> Iterator[int]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(stand_in_gateway(request.param), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield port
    server.should_exit = True
    thread.join(10)


@pytest.mark.parametrize("gateway", ["completed"], indirect=True)
def test_demo_uses_a_running_gateway_end_to_end(gateway: int, tmp_path: Path) -> None:
    out = tmp_path / "res" / "demo.zip"
    result = runner.invoke(app, ["demo", "--out", str(out), "--data-dir", str(tmp_path / "d")],
                           env={"GATEWAY_PORT": str(gateway), "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "already running" in result.output
    facts = summarize_zip(out)
    assert facts["sheets"] == facts["mattes"] == len(sample_images())
    assert f"{len(sample_images())} comparison sheets" in result.output
    assert "demo/animals/cats/chelsea.jpg" in result.output


@pytest.mark.parametrize("gateway", ["completed_with_errors"], indirect=True)
def test_demo_fails_when_the_job_does_not_fully_complete(gateway: int, tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "r.zip")],
                           env={"GATEWAY_PORT": str(gateway)})
    assert result.exit_code == 1
    assert "completed_with_errors" in result.output
