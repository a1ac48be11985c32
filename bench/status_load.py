"""`/status` latency with and without upload load, on the real stack.

The whole stack runs as in `make run` (every service its own process under Supervisor) in a
temporary DATA_DIR on free ports, with the `identity` engine so the images cost nothing and
what is measured is the pipeline. Fifty pollers (asyncio, one connection each) GET
`/status/{job}` every POLL_INTERVAL_S; first on an idle stack (the baseline: the jobs of a
warm-up round, finished), then while five clients upload zips back to back and the pollers
follow the running jobs. Latency is from request sent to body read, seen by the client.

    python -m bench.status_load          # writes bench/last_status_load.md
    BENCH_STATUS_S=10 python -m bench.status_load
"""

from __future__ import annotations

import asyncio
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from PIL import Image

from mattepipe.stack import (
    health_urls,
    start_stack,
    stop_stack,
    supervisor_bin,
    wait_healthy,
)
from shared.settings import Settings

__all__ = ["run"]

POLLERS = 50
CLIENTS = 5
IMAGES_PER_JOB = 16
IMAGE_SIZE = (128, 96)
POLL_INTERVAL_S = 0.5
PHASE_S = float(os.environ.get("BENCH_STATUS_S", "20"))
FINAL = ("completed", "completed_with_errors", "failed", "cancelled")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _settings(data: Path) -> Settings:
    gw, mapi, capi = _free_port(), _free_port(), _free_port()
    return Settings(
        data_dir=data, gateway_port=gw, matting_api_port=mapi, comparison_api_port=capi,
        matting_api_url=f"http://127.0.0.1:{mapi}", comparison_api_url=f"http://127.0.0.1:{capi}",
        matting_worker_port=_free_port(), comparison_worker_port=_free_port(),
        models_dir=data / "models", api_key=None, max_concurrent_jobs=0, max_jobs_per_hour=0,
        max_jobs_per_day=0, log_level="WARNING",
    )  # fmt: skip


def _zip(client: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for i in range(IMAGES_PER_JOB):
            img = io.BytesIO()
            Image.new("RGB", IMAGE_SIZE, (client * 40 % 256, i * 13 % 256, 90)).save(img, "PNG")
            zf.writestr(f"client{client}/img{i:03d}.png", img.getvalue())
    return buf.getvalue()


@dataclass
class Phase:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    jobs: int = 0
    images: int = 0
    upload_s: list[float] = field(default_factory=list)
    gateway_cpu: float = 0.0
    """Share of one core the gateway process used during the phase."""
    load: float = 0.0
    """The machine's 1-minute load average at the phase's end."""


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc (0 where there is none)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _gateway_pid(conf: Path) -> int:
    ctl = Path(supervisor_bin()).with_name("supervisorctl")
    out = subprocess.run([str(ctl), "-c", str(conf), "pid", "gateway"], capture_output=True,
                         text=True, timeout=30).stdout.strip()  # fmt: skip
    return int(out) if out.isdigit() else 0


async def _poller(c: httpx.AsyncClient, i: int, targets: list[str], out: Phase,
                  stop: asyncio.Event) -> None:  # fmt: skip
    await asyncio.sleep(POLL_INTERVAL_S * i / POLLERS)  # spread the pollers over the interval
    k = i
    while not stop.is_set():
        if targets:
            job = targets[k % len(targets)]
            k += 1
            t0 = time.perf_counter()
            try:
                r = await c.get(f"/status/{job}")
                ok = r.status_code == 200 and "state" in r.json()
            except httpx.HTTPError:
                ok = False
            if ok:
                out.latencies.append(time.perf_counter() - t0)
            else:
                out.errors += 1
        await asyncio.sleep(POLL_INTERVAL_S)


async def _wait(c: httpx.AsyncClient, job: str) -> dict[str, object]:
    while True:
        st: dict[str, object] = (await c.get(f"/status/{job}")).json()
        if st["state"] in FINAL:
            return st
        await asyncio.sleep(0.25)


async def _upload(c: httpx.AsyncClient, body: bytes, out: Phase | None) -> str:
    t0 = time.perf_counter()
    r = await c.post("/upload", content=body, params={"model": "identity"},
                     headers={"Content-Type": "application/zip"})  # fmt: skip
    r.raise_for_status()
    if out is not None:
        out.upload_s.append(time.perf_counter() - t0)
    return str(r.json()["job_id"])


async def _uploader(c: httpx.AsyncClient, n: int, body: bytes, until: float, targets: list[str],
                    out: Phase) -> None:  # fmt: skip
    """Upload, wait for the end, upload again, until the phase is over."""
    while time.monotonic() < until:
        job = await _upload(c, body, out)
        targets[n] = job  # the pollers follow this client's running job
        st = await _wait(c, job)
        if st["state"] != "completed":
            raise RuntimeError(f"job {job} ended {st['state']}: {st.get('error')}")
        out.jobs += 1
        out.images += int(str(st["completed"]))


async def _measure(url: str, bodies: list[bytes], gw_pid: int) -> tuple[Phase, Phase]:
    limits = httpx.Limits(max_connections=POLLERS + 2 * CLIENTS + 4)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as c:
        warm = [await _upload(c, body, None) for body in bodies]  # engines loaded, jobs final
        for job in warm:
            await _wait(c, job)
        phases: list[Phase] = []
        for loaded in (False, True):
            out, stop = Phase(), asyncio.Event()
            targets = list(warm)
            pollers = [asyncio.create_task(_poller(c, i, targets, out, stop))
                       for i in range(POLLERS)]  # fmt: skip
            t0, cpu0 = time.monotonic(), _cpu_s(gw_pid)
            if loaded:
                await asyncio.gather(*(_uploader(c, n, bodies[n], t0 + PHASE_S, targets, out)
                                       for n in range(CLIENTS)))  # fmt: skip
            else:
                await asyncio.sleep(PHASE_S)
            out.seconds = time.monotonic() - t0
            out.gateway_cpu = (_cpu_s(gw_pid) - cpu0) / out.seconds
            out.load = os.getloadavg()[0]
            stop.set()
            await asyncio.gather(*pollers)
            phases.append(out)
        return phases[0], phases[1]


def _row(name: str, p: Phase) -> str:
    ms = sorted(x * 1000 for x in p.latencies)
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return (f"| {name} | {len(ms)} | {len(ms) / p.seconds:.0f} | {q[49]:.1f} | {q[94]:.1f} | "
            f"{q[98]:.1f} | {ms[-1]:.1f} | {p.errors} | {100 * p.gateway_cpu:.0f} % "
            f"| {p.load:.1f} |")  # fmt: skip


def _ratio(a: Phase, b: Phase, pct: int) -> str:
    qa = statistics.quantiles(a.latencies, n=100, method="inclusive")[pct - 1]
    qb = statistics.quantiles(b.latencies, n=100, method="inclusive")[pct - 1]
    return f"{qb / qa:.1f}×"


def run() -> str:
    bodies = [_zip(n) for n in range(CLIENTS)]
    with tempfile.TemporaryDirectory(prefix="mattepipe-bench-") as tmp:
        data = Path(tmp) / "data"
        settings = _settings(data)
        conf = data / "supervisord.conf"
        proc = start_stack(settings, conf=conf, quiet=True)
        try:
            wait_healthy(health_urls(settings), timeout=300)
            url = f"http://127.0.0.1:{settings.gateway_port}"
            idle, loaded = asyncio.run(_measure(url, bodies, _gateway_pid(conf)))
        finally:
            stop_stack(proc)
    up = sorted(loaded.upload_s)
    lines = [
        "## `/status` under load (real stack, `bench/status_load.py`)",
        "",
        f"The stack as `make run` starts it ({settings.matting_workers} matting workers, "
        f"{settings.comparison_workers} comparison worker, balancers, gateway; Supervisor) on "
        f"127.0.0.1, `identity` engine. {POLLERS} pollers GET `/status/{{job}}` every "
        f"{POLL_INTERVAL_S:g} s for {PHASE_S:g} s: idle (baseline: the finished jobs of a warm-up "
        f"round), then while {CLIENTS} clients upload zips of {IMAGES_PER_JOB} PNGs "
        f"({IMAGE_SIZE[0]}×{IMAGE_SIZE[1]}) back to back, each waiting for its job's end, and "
        f"the pollers follow the running jobs. Client and stack share the machine: "
        f"{os.cpu_count()} CPU cores, Python {sys.version.split()[0]}.",
        "",
        "| phase | answers | answers/s | p50 ms | p95 ms | p99 ms | max ms | errors "
        "| gateway CPU | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|",
        _row("idle stack (baseline)", idle),
        _row(f"{CLIENTS} clients uploading", loaded),
        f"| under load ÷ baseline | | | {_ratio(idle, loaded, 50)} | "
        f"{_ratio(idle, loaded, 95)} | {_ratio(idle, loaded, 99)} | | | | |",
        "",
        f"Upload throughput during the loaded phase: {loaded.jobs} jobs, {loaded.images} images "
        f"completed in {loaded.seconds:.1f} s = **{loaded.images / loaded.seconds:.1f} images/s** "
        f"({60 * loaded.jobs / loaded.seconds:.1f} jobs/min); `POST /upload` answered in "
        f"p50 {1000 * statistics.median(up):.0f} ms, max {1000 * up[-1]:.0f} ms.",
        "",
        "Gateway CPU is the share of one core its process used in the phase; load avg is the "
        "machine's 1-minute load average at the phase's end. Where the load average is well "
        "above the core count (other work on the machine), the loaded figures measure CPU "
        "starvation as much as the gateway.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    text = run()
    (Path(__file__).parent / "last_status_load.md").write_text(text)
    print(text)
