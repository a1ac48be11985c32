"""`mattepipe` commands: help, the stack's config, the demo archive, and the demo's whole
flow against a stand-in gateway (a real HTTP server in this process speaking the public API;
the real services are exercised by the integration suite)."""

from __future__ import annotations

import io
import json
import os
import socket
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response
from typer.testing import CliRunner

from mattepipe.cli.main import app
from mattepipe.demo import SAMPLE_FOLDERS, build_demo_archive, sample_images, summarize_zip
from tests.support.servers import ThreadServer
from tests.support.standin import StandIn, serve

runner = CliRunner()


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
    with ThreadServer(stand_in_gateway(request.param)) as server:
        yield server.port


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


# --- client commands against the stand-in gateway with tus (tests/shared/standin.py) ----------

WIDE = {"COLUMNS": "200"}


def photo_tree(root: Path, n: int = 4) -> dict[str, bytes]:
    files = {f"day{i % 2}/shot {i}.jpg": os.urandom(6000 + i) for i in range(n)}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def cli(st: StandIn, *args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, [*args], env={**WIDE, "MATTEPIPE_SERVER": st.url, **(env or {})})


def test_run_interrupted_then_resumed_with_the_same_arguments(tmp_path: Path) -> None:
    files = photo_tree(tmp_path / "shoot")
    state_dir, out = tmp_path / "state", tmp_path / "res.zip"
    args = ["run", str(tmp_path / "shoot"), "-o", str(out), "--state-dir", str(state_dir),
            "--model", "classical", "--chunk-size", "4096"]
    with serve(StandIn()) as st:
        first = cli(st, *args, "--stop-after-bytes", "8192")
        assert first.exit_code == 130, first.output
        assert "the same command again resumes" in first.output
        assert len(list(state_dir.iterdir())) == 1 and not out.exists()

        second = cli(st, *args)
        assert second.exit_code == 0, second.output
        total = len(bytes(next(iter(st.uploads.values()))["data"]))
        assert f"sent {total - 8192} bytes this time, resumed at byte 8192" in second.output
        assert "completed" in second.output and str(out) in second.output.replace("\n", "")
    assert list(state_dir.iterdir()) == []  # done: the state is gone
    (job,) = st.jobs.values()
    (tmp_path / "sent.zip").write_bytes(job["data"])
    with zipfile.ZipFile(tmp_path / "sent.zip") as zf:
        assert {n: zf.read(n) for n in zf.namelist()} == files
    with zipfile.ZipFile(out) as zf:
        assert "matting_output/day1/shot 1.jpg.png" in zf.namelist()


def test_run_interrupted_while_waiting_follows_the_same_job(tmp_path: Path) -> None:
    photo_tree(tmp_path / "p", n=1)
    args = ["run", str(tmp_path / "p"), "-o", str(tmp_path / "r.zip"), "--state-dir",
            str(tmp_path / "s")]
    with serve(StandIn()) as st:
        from mattepipe.client.packing import open_source
        from mattepipe.client.resume import ResumeState, StateStore, state_key

        src = open_source(tmp_path / "p")
        assert cli(st, "upload", str(tmp_path / "p"), "--state-dir", str(tmp_path / "u"))\
            .exit_code == 0
        (job_id,) = st.jobs
        key = state_key(src.path, src.fingerprint, st.url, None, "rgba")
        StateStore(tmp_path / "s").save(ResumeState(key=key, path=str(src.path),
                                                     server=st.url, size=src.size,
                                                     job_id=job_id))
        result = cli(st, *args)
    assert result.exit_code == 0, result.output
    assert f"job {job_id} was created by an earlier start" in result.output
    assert len(st.jobs) == 1 and (tmp_path / "r.zip").exists()


@pytest.mark.parametrize(("final", "error", "code", "says"), [
    ("completed_with_errors", None, 3, "3 completed, 0 failed, 1 rejected of 4"),
    ("failed", "archive holds no images", 1, "reason: archive holds no images"),
])
def test_run_exit_code_says_how_the_job_ended(tmp_path: Path, final: str, error: str | None,
                                              code: int, says: str) -> None:
    photo_tree(tmp_path / "p")
    with serve(StandIn(final_state=final, error=error)) as st:
        result = cli(st, "run", str(tmp_path / "p"), "-o", str(tmp_path / "r.zip"),
                     "--state-dir", str(tmp_path / "s"))
    assert result.exit_code == code, result.output
    assert final in result.output and says in result.output
    assert (tmp_path / "r.zip").exists() == (final != "failed")
    assert list((tmp_path / "s").iterdir()) == []


def test_refusals_and_an_unreachable_server_are_explained(tmp_path: Path) -> None:
    photo_tree(tmp_path / "p", n=1)
    with serve(StandIn(api_key="s3cret")) as st:
        bad_model = cli(st, "upload", str(tmp_path / "p"), "--model", "nope", "--state-dir",
                        str(tmp_path / "s"), env={"MATTEPIPE_API_KEY": "s3cret"})
        assert bad_model.exit_code == 4, bad_model.output
        assert "unknown model 'nope'" in bad_model.output
        no_key = cli(st, "jobs")
        assert no_key.exit_code == 4 and "wrong API key" in no_key.output
    gone = runner.invoke(app, ["status", "j1", "--server", st.url], env=WIDE)
    assert gone.exit_code == 4 and "cannot reach the gateway" in gone.output
    missing = runner.invoke(app, ["run", str(tmp_path / "nothing"), "--server", st.url])
    assert missing.exit_code == 2 and "no such file or folder" in missing.output
    bad_output = runner.invoke(app, ["run", str(tmp_path / "p"), "--output", "jpeg"])
    assert bad_output.exit_code == 2 and "rgba" in bad_output.output


def test_upload_status_jobs_wait_download_cancel(tmp_path: Path) -> None:
    photo_tree(tmp_path / "p", n=2)
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.jpg", b"x")
    with serve(StandIn()) as st:
        up = cli(st, "upload", str(archive), "--state-dir", str(tmp_path / "s"))
        assert up.exit_code == 0, up.output
        job_id = up.stdout.strip()
        assert st.jobs[job_id]["data"] == archive.read_bytes()

        early = cli(st, "download", job_id, "-o", str(tmp_path / "early.zip"))
        assert early.exit_code == 4 and "use ?partial=1" in early.output
        assert cli(st, "download", job_id, "--partial", "-o", str(tmp_path / "early.zip"))\
            .exit_code == 0

        st_json = cli(st, "status", job_id, "--json")
        assert st_json.exit_code == 0
        assert json.loads(st_json.stdout)["job_id"] == job_id
        table = cli(st, "status", job_id)
        assert "running" in table.stdout and "ETA" in table.stdout

        waited = cli(st, "wait", job_id, "-o", str(tmp_path / "w.zip"))
        assert waited.exit_code == 0 and "completed" in waited.output
        assert zipfile.ZipFile(tmp_path / "w.zip").namelist()[0] == "matting_output/a.jpg.png"

        other = cli(st, "upload", str(tmp_path / "p"), "--state-dir", str(tmp_path / "s"))
        listing = cli(st, "jobs")
        assert listing.exit_code == 0
        assert job_id in listing.stdout and other.stdout.strip() in listing.stdout

        cancelled = cli(st, "cancel", other.stdout.strip())
        assert cancelled.exit_code == 0 and "cancelled" in cancelled.output
        after = cli(st, "wait", other.stdout.strip())
        assert after.exit_code == 1 and "cancelled" in after.output
        assert cli(st, "status", "nope").exit_code == 4


@pytest.mark.parametrize("tus", [True, False])
def test_upload_passes_the_output_options(tmp_path: Path, tus: bool) -> None:
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.jpg", b"x")
    with serve(StandIn(tus=tus)) as st:
        up = cli(st, "upload", str(archive), "--state-dir", str(tmp_path / "s"),
                 "--format", "webp", "--max-size", "64", "--background", "#fff",
                 "--crop", "5")
        assert up.exit_code == 0, up.output
        (sent,) = st.requests
        assert {k: str(sent[k]) for k in ("format", "max_size", "background", "crop")} == {
            "format": "webp", "max_size": "64", "background": "#fff", "crop": "5.0"}
        plain = cli(st, "upload", str(archive), "--state-dir", str(tmp_path / "s"))
        assert plain.exit_code == 0, plain.output
        assert not {"format", "max_size", "background", "crop"} & set(st.requests[-1])
        for bad, why in ((["--format", "gif"], "unknown format"),
                         (["--background", "white"], "background must be a colour"),
                         (["--max-size", "8"], "greater than or equal to 16")):
            refused = cli(st, "upload", str(archive), *bad)
            assert refused.exit_code == 2 and why in refused.output, refused.output
        assert len(st.requests) == 2  # the refusals sent nothing


def test_matte_with_output_options(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "in").mkdir()
    Image.new("RGB", (80, 40), (200, 10, 10)).save(tmp_path / "in" / "a.jpg")
    result = runner.invoke(app, ["matte", str(tmp_path / "in"), str(tmp_path / "out"),
                                 "--model", "identity", "--format", "webp", "--max-size", "20",
                                 "--background", "#00ff00", "--output", "both"], env=WIDE)
    assert result.exit_code == 0, result.output
    cut = Image.open(tmp_path / "out" / "a.webp")
    assert cut.format == "WEBP" and cut.mode == "RGB" and cut.size == (20, 10)
    assert Image.open(tmp_path / "out" / "a.alpha.png").size == (80, 40)  # the full matte
    bad = runner.invoke(app, ["matte", str(tmp_path / "in"), str(tmp_path / "o2"),
                              "--crop", "-3"])
    assert bad.exit_code == 2


def test_matte_a_folder_locally(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "in" / "sub").mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "in" / "a.jpg")
    Image.new("RGB", (20, 20), (0, 90, 10)).save(tmp_path / "in" / "sub" / "b.png")
    (tmp_path / "in" / "broken.jpg").write_bytes(b"not a jpeg")
    result = runner.invoke(app, ["matte", str(tmp_path / "in"), str(tmp_path / "out"),
                                 "--model", "identity", "--output", "both"], env=WIDE)
    assert result.exit_code == 3, result.output
    assert "2 matted, 1 failed" in result.output and "broken.jpg" in result.output
    cut = Image.open(tmp_path / "out" / "sub" / "b.png")
    assert cut.mode == "RGBA" and cut.size == (20, 20)
    assert (tmp_path / "out" / "a.alpha.png").exists()
    bad = runner.invoke(app, ["matte", str(tmp_path / "in"), str(tmp_path / "o2"),
                              "--model", "nope"])
    assert bad.exit_code == 2 and "nope" in bad.output


def test_matte_keeps_the_tree_and_lists_failures(tmp_path: Path) -> None:
    """The one-shot runner's command line (once `python -m matting_worker.oneshot`): nested
    folders kept, hidden files and non-images skipped, a broken image listed, exit 3."""
    import numpy as np
    from PIL import Image

    src = tmp_path / "in"
    sizes = {"a.jpg": (40, 30), "sub/b.png": (25, 35), "sub/deeper/c.webp": (16, 20)}
    for rel, (w, h) in sizes.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        arr = np.random.default_rng(len(rel)).integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(arr).save(src / rel)
    (src / "sub" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (src / "readme.txt").write_text("not an image")
    (src / ".hidden.png").write_bytes(b"")
    out = tmp_path / "cli-out"
    result = runner.invoke(app, ["matte", str(src), str(out), "--model", "identity",
                                 "--models-dir", str(tmp_path)], env=WIDE)
    assert result.exit_code == 3, result.output  # one image failed: completed with errors
    assert "3 matted, 1 failed" in result.output
    assert "sub/broken.jpg" in result.output
    assert (out / "sub" / "deeper" / "c.png").is_file()
    bad = runner.invoke(app, ["matte", str(src), str(out), "--model", "nope",
                              "--models-dir", str(tmp_path)], env=WIDE)
    assert bad.exit_code == 2
    assert "unknown model 'nope'" in bad.output


def test_wait_rides_out_a_gateway_restart(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"x")
    with serve(StandIn()) as st:
        job_id = cli(st, "upload", str(tmp_path / "a.jpg"), "--state-dir",
                     str(tmp_path / "s")).stdout.strip()
        st.status_outages = 2
        result = cli(st, "wait", job_id)
    assert result.exit_code == 0, result.output
    assert "gateway unavailable (restarting); waiting for it" in result.output
    assert st.status_outages == 0


def test_wait_polls_a_gateway_without_event_streams(tmp_path: Path) -> None:
    """The stand-in is an older gateway: `/jobs/{id}/events` is a 404. `wait` asks for the
    stream once, then polls /status as before, with the same output and exit code."""
    (tmp_path / "a.jpg").write_bytes(b"x")
    with serve(StandIn(final_state="completed_with_errors")) as st:
        job_id = cli(st, "upload", str(tmp_path / "a.jpg"), "--state-dir",
                     str(tmp_path / "s")).stdout.strip()
        st.paths.clear()
        result = cli(st, "wait", job_id)
    assert result.exit_code == 3, result.output
    assert "completed_with_errors" in result.output
    assert st.paths[0] == f"/jobs/{job_id}/events"
    assert st.paths[1:] == [f"/status/{job_id}"] * 3
