"""Upload memory benchmark: a multi-GB body through `receive_upload` with flat server memory.

The server is a tiny FastAPI app around `gateway.intake.receive.receive_upload`, run by uvicorn in
its own process so its RSS is the upload path's alone. The client streams a generated body
(one reused 1 MiB block, so the client stays flat too) as raw bytes and as multipart; the
server's VmRSS is sampled from /proc every 100 ms.

    python -m bench.upload_memory          # writes bench/last_upload_memory.md
    BENCH_UPLOAD_GIB=1 python -m bench.upload_memory
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from fastapi import FastAPI, Request

from gateway.api.errors import request_body
from gateway.intake.receive import receive_upload

__all__ = ["make_app", "run"]

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024**2
GIB = 1024**3
BLOCK = os.urandom(MIB)
BOUNDARY = "benchboundary7d1f0c"


def make_app(dest: Path) -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, int]:
        got = await receive_upload(request_body(request), request.headers, dest,
                                   max_size=1 << 50, min_free=256 * MIB)
        size = got.size
        got.path.unlink()
        return {"size": size}

    return app


def _serve(port: int, dest: Path) -> None:
    import uvicorn

    uvicorn.run(make_app(dest), host="127.0.0.1", port=port, log_level="warning")


def _rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class _Sampler(threading.Thread):
    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, threading.Event()
        self.interval = interval

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, _rss_kib(self.pid))
            self.stop.wait(self.interval)


def _raw_body(total: int) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        n = min(MIB, total - sent)
        yield BLOCK if n == MIB else BLOCK[:n]
        sent += n


def _multipart_body(total: int) -> Iterator[bytes]:
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="bench.zip"'
        f"\r\nContent-Type: application/zip\r\n\r\n"
    ).encode()
    yield from _raw_body(total)
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _one(url: str, pid: int, kind: str, total: int) -> dict[str, float]:
    if kind == "raw":
        body, ctype = _raw_body(total), "application/zip"
    else:
        body, ctype = _multipart_body(total), f"multipart/form-data; boundary={BOUNDARY}"
    before = _rss_kib(pid)
    sampler = _Sampler(pid)
    sampler.start()
    t0 = time.perf_counter()
    r = httpx.post(f"{url}/upload?filename=bench.zip", content=body,
                   headers={"content-type": ctype}, timeout=None)  # fmt: skip
    elapsed = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    r.raise_for_status()
    if r.json()["size"] != total:
        raise RuntimeError(f"server stored {r.json()['size']} bytes, sent {total}")
    return {"before": before / 1024, "peak": sampler.peak / 1024, "mbps": total / MIB / elapsed,
            "seconds": elapsed}  # fmt: skip


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            httpx.get(f"{url}/health", timeout=1).raise_for_status()
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.2)


def _gateway(total: int, tmp: str) -> dict[str, float]:
    """The same raw body into the real gateway (`python -m gateway`): the whole upload route,
    job row and background ingest included (the random body is then refused as no archive)."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DATA_DIR": f"{tmp}/gw",
           "GATEWAY_PORT": str(port), "MAX_CONCURRENT_JOBS": "0", "LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "--port", str(port)], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, proc, 120, "gateway")
        before = _rss_kib(proc.pid)
        sampler = _Sampler(proc.pid)
        sampler.start()
        t0 = time.perf_counter()
        r = httpx.post(f"{url}/upload?filename=bench.zip", content=_raw_body(total),
                       headers={"content-type": "application/zip"}, timeout=None)  # fmt: skip
        elapsed = time.perf_counter() - t0
        sampler.stop.set()
        sampler.join()
        if r.status_code != 202:
            raise RuntimeError(f"gateway answered {r.status_code}: {r.text}")
        return {"before": before / 1024, "peak": sampler.peak / 1024,
                "mbps": total / MIB / elapsed, "seconds": elapsed}  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(30)


def run() -> str:
    gib = float(os.environ.get("BENCH_UPLOAD_GIB", "2"))
    total = int(gib * GIB)
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="bench-upload-") as tmp:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.upload_memory", "serve", str(port), tmp],
            cwd=ROOT, env=env,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_healthy(url, proc, 60, "bench server")
            idle = _rss_kib(proc.pid) / 1024
            results = {kind: _one(url, proc.pid, kind, total) for kind in ("raw", "multipart")}
            hwm = _rss_kib(proc.pid, "VmHWM") / 1024
        finally:
            proc.terminate()
            proc.wait(10)
        results["raw, whole gateway"] = _gateway(total, tmp)
    lines = [
        "## Upload memory (streaming `POST /upload` receive path)",
        "",
        f"{gib:g} GiB body generated by the client, streamed to a uvicorn server running "
        "`gateway.intake.receive.receive_upload` (its own process); server VmRSS sampled every "
        "100 ms. "
        f"Machine: {os.cpu_count()} CPU cores; loopback; file written to local disk.",
        "",
        "| body | size | time s | throughput MiB/s | server RSS before MiB | peak RSS during MiB |",
        "|---|---|---|---|---|---|",
    ]
    for kind, r in results.items():
        lines.append(
            f"| {kind} | {gib:g} GiB | {r['seconds']:.1f} | {r['mbps']:.0f} | {r['before']:.0f} "
            f"| {r['peak']:.0f} |"
        )
    lines += ["", f"Receive-path server idle RSS {idle:.0f} MiB; lifetime peak (VmHWM) "
              f"{hwm:.0f} MiB. The last row is the real gateway process (`python -m gateway`, "
              "its whole import set, DB and scheduler), the same body as the first row.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        _serve(int(sys.argv[2]), Path(sys.argv[3]))
    else:
        out = run()
        (Path(__file__).parent / "last_upload_memory.md").write_text(out)
        print(out)
