"""Upload speed benchmark: `POST /upload` (raw and multipart) and a tus PATCH against the wire.

The baseline is a tiny socket server (`sink`, its own process) that reads an HTTP request's
body with `recv_into` into one reused buffer and writes it to a file in the same directory
the gateway writes to: the speed of a raw loopback socket into a file. The real gateway
(`python -m gateway`, its own process) takes the same bytes from the same client: curl,
sending one file (`-T` streams it, `-F` builds the multipart form), with `Expect:` off for
every target alike (since issue 17's fourth pass the raw `POST /upload` and the PATCH bodies
are spliced socket → pipe → file by the gateway, `gateway.intake.splice`; multipart goes
through the parser). Runs are interleaved (one of each target per round) and the best of N
counts, so a neighbour's load spike hurts one run rather than one target; `uptime` before
and after says how busy the machine was. The gateway's peak RSS (VmRSS sampled every 50 ms)
shows that memory stays flat while a whole GiB goes through.

    python -m bench upload_speed                    # writes bench/last_upload_speed.md
    BENCH_SPEED_GIB=1 BENCH_SPEED_ROUNDS=3 python -m bench.upload_speed
    BENCH_SPEED_COMPARE=/tmp/up-base python -m bench.upload_speed   # also another tree's gateway
    BENCH_SPEED_S3=0 python -m bench.upload_speed   # without the object-storage rows

Object storage (on by default when SeaweedFS's `weed` is installed: the dev extra): a SeaweedFS
server on loopback (`tests.support.seaweed.start_seaweed`, the tests' own) and a second gateway
of this tree with STORAGE_URL=s3://… on it, measured in the same rounds as the local one;
its own baseline is the store's speed for the same file (`S3Store.put_file`, in this process),
so the ratios say what the gateway costs on top of the store, beside what the local disk costs.
A second table times ingest (202 → `running`) of a zip of `BENCH_INGEST_IMAGES` small PNGs on
both gateways: on S3 every image is one PUT (`OBJECT_PUT_CONCURRENCY` at a time) before its
task row exists.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx

from bench.upload_memory import _free_port, _Sampler, _wait_healthy

__all__ = ["run", "sink"]

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024**2
GIB = 1024**3
SINK_BUFFER = 1 << 20
"""The socket baseline's `recv_into` buffer: large reads, one buffer reused, no copies."""


def sink(port: int, dest: Path) -> None:
    """The baseline: one HTTP/1.1 request at a time, body straight from the socket into a
    file (recv_into one buffer, write from a view of it), answered 200 with the byte count."""
    srv = socket.create_server(("127.0.0.1", port))
    buf = bytearray(SINK_BUFFER)
    view = memoryview(buf)
    while True:
        conn, _ = srv.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                got = conn.recv(65536)
                if not got:
                    break
                head += got
            if b"\r\n\r\n" not in head:
                continue
            header, _, rest = head.partition(b"\r\n\r\n")
            if header.startswith(b"GET"):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                continue
            length = 0
            for line in header.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            path = dest / "sink.bin"
            with open(path, "wb", buffering=0) as f:
                f.write(rest)
                left = length - len(rest)
                while left > 0:
                    n = conn.recv_into(view, min(left, SINK_BUFFER))
                    if not n:
                        break
                    f.write(view[:n])
                    left -= n
            size = path.stat().st_size
            path.unlink()
            body = str(size).encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                         % (len(body), body))


@dataclass
class _Target:
    name: str
    run: Callable[[], float]
    """One upload; its wall time in seconds (curl's own `time_total`)."""
    pid: int
    after: Callable[[], None] = lambda: None
    """Clean-up after an upload (drop its job or file), outside the counted CPU and faults."""
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    """The server process's CPU seconds (user + system) per upload: on a machine shared with
    busy neighbours a steadier figure than wall time."""
    faults: list[int] = field(default_factory=list)
    """The server process's minor page faults per upload (README, "Upload speed: the gateway
    keeps its freed heap": what held `POST /upload` to 0.3 of the socket)."""
    peak_mib: float = 0.0


_TICK = os.sysconf("SC_CLK_TCK")


def _counters(pid: int) -> tuple[float, int]:
    """(CPU seconds, minor page faults) of process `pid` so far, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # after the command name: state is field 3, minflt 10, utime 14, stime 15 (man 5 proc)
    return (int(fields[11]) + int(fields[12])) / _TICK, int(fields[7])


def _curl(args: list[str]) -> tuple[int, str, float]:
    """curl with `args`; (status, body, seconds)."""
    out = subprocess.run(
        ["curl", "-sS", "-H", "Expect:", "-o", "-", "-w", "\n%{http_code} %{time_total}", *args],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    body, _, tail = out.stdout.rpartition("\n")
    code, seconds = tail.split()
    return int(code), body, float(seconds)


def _check(code: int, body: str, want: int, what: str) -> None:
    if code != want:
        raise RuntimeError(f"{what}: HTTP {code} (wanted {want}): {body[:300]}")


class _Gateway:
    """`python -m gateway` from `tree` on a fresh DATA_DIR; uploads it takes are dropped
    again (DELETE) so a round leaves no GiB behind."""

    def __init__(self, tree: Path, data: Path, shim: Path | None = None,
                 extra_env: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.pending = self.pending_tus = ""
        self.data = data
        path = f"{shim}{os.pathsep}{tree}" if shim else str(tree)
        env = {**os.environ, "PYTHONPATH": path, "DATA_DIR": str(data),
               "GATEWAY_PORT": str(self.port), "MAX_CONCURRENT_JOBS": "0",
               "LOG_LEVEL": "WARNING", **(extra_env or {})}  # fmt: skip
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "--port", str(self.port)], cwd=tree, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_healthy(self.url, self.proc, 120, f"gateway from {tree}")

    def upload_raw(self, src: Path) -> float:
        code, body, s = _curl(["-X", "POST", "-T", str(src), "-H",
                               "Content-Type: application/zip",
                               f"{self.url}/upload?filename=bench.zip"])  # fmt: skip
        _check(code, body, 202, "raw upload")
        self.pending = body
        return s

    def upload_multipart(self, src: Path) -> float:
        code, body, s = _curl(["-F", f"file=@{src};filename=bench.zip;type=application/zip",
                               f"{self.url}/upload"])  # fmt: skip
        _check(code, body, 202, "multipart upload")
        self.pending = body
        return s

    def tus_patch(self, src: Path) -> float:
        size = src.stat().st_size
        r = httpx.post(f"{self.url}/files/", headers={
            "Tus-Resumable": "1.0.0", "Upload-Length": str(size),
            "Upload-Metadata": "filename YmVuY2guemlw"})  # fmt: skip
        _check(r.status_code, r.text, 201, "tus create")
        location = httpx.URL(self.url).join(r.headers["location"])
        code, body, s = _curl(["-X", "PATCH", "-T", str(src),
                               "-H", "Tus-Resumable: 1.0.0", "-H", "Upload-Offset: 0",
                               "-H", "Content-Type: application/offset+octet-stream",
                               str(location)])  # fmt: skip
        _check(code, body, 204, "tus PATCH")
        self.pending_tus = str(location)
        return s

    def settle(self) -> None:
        """Drop what the last upload left (its job, or its tus upload)."""
        if self.pending:
            self._drop(self.pending)
        if self.pending_tus:
            httpx.delete(self.pending_tus, headers={"Tus-Resumable": "1.0.0"})
        self.pending = self.pending_tus = ""

    def ingest(self, src: Path, images: int) -> float:
        """Upload a zip of `images` images and wait for its tasks: seconds from the request's
        start to the job leaving `ingesting` (the upload itself is a small part of it)."""
        import json

        t0 = time.perf_counter()
        code, body, _ = _curl(["-X", "POST", "-T", str(src), "-H",
                               "Content-Type: application/zip",
                               f"{self.url}/upload?filename=images.zip"])  # fmt: skip
        _check(code, body, 202, "ingest upload")
        job = json.loads(body)["job_id"]
        while True:
            status = httpx.get(f"{self.url}/status/{job}").json()
            if status.get("state") not in ("uploading", "ingesting"):
                break
            time.sleep(0.05)
        took = time.perf_counter() - t0
        if status.get("total") != images:
            raise RuntimeError(f"ingest: {status}")
        self._drop(body)
        return took

    def _drop(self, body: str) -> None:
        import json

        job = json.loads(body)["job_id"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = httpx.get(f"{self.url}/status/{job}").json().get("state")
            if state not in ("uploading", "ingesting", "queued"):
                break
            time.sleep(0.2)
        httpx.delete(f"{self.url}/jobs/{job}")
        shutil.rmtree(self.data / "input" / job, ignore_errors=True)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def _sink_upload(url: str, src: Path, size: int) -> float:
    code, body, s = _curl(["-X", "POST", "-T", str(src), "-H",
                           "Content-Type: application/octet-stream", f"{url}/sink"])
    _check(code, body, 200, "socket sink")
    if int(body) != size:
        raise RuntimeError(f"sink stored {body} bytes, sent {size}")
    return s


class _S3:
    """A SeaweedFS server for the object-storage rows, and the store's own speed."""

    def __init__(self, folder: Path) -> None:
        from tests.support.seaweed import start_seaweed

        self.server = start_seaweed(folder)
        self.env = {**self.server.env, "STORAGE_URL": self.server.storage_url("bench")}

    def put_file(self, src: Path) -> float:
        from shared.objects import S3Store

        os.environ.update(self.server.env)
        store = S3Store(self.server.bucket, "bench-baseline", self.server.endpoint)
        t0 = time.perf_counter()
        store.put_file("input/baseline/upload.bin", src)
        took = time.perf_counter() - t0
        store.delete("input/baseline/upload.bin")
        return took


def _s3_wanted() -> bool:
    from tests.support.seaweed import weed_binary

    return os.environ.get("BENCH_SPEED_S3", "1") != "0" and weed_binary() is not None


def _image_zip(path: Path, images: int) -> None:
    """`images` distinct 64×64 noise PNGs (~12 KiB each), stored: ingest's per-image costs."""
    import io
    import zipfile

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(3)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for i in range(images):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), np.uint8)).save(buf, "PNG")
            zf.writestr(f"set/{i // 500}/img{i:05d}.png", buf.getvalue())


def _timed(target: _Target, source: Path) -> None:
    # The previous target's gigabyte may still be dirty in the page cache: written back now,
    # outside the timing, so no target pays for the one before it (writeback throttling).
    os.sync()
    sampler = _Sampler(target.pid, interval=0.05)
    sampler.start()
    cpu, faults = _counters(target.pid)
    try:
        target.times.append(target.run())
        cpu_after, faults_after = _counters(target.pid)
        target.cpu.append(cpu_after - cpu)
        target.faults.append(faults_after - faults)
    finally:
        sampler.stop.set()
        sampler.join()
        target.after()
    target.peak_mib = max(target.peak_mib, sampler.peak / 1024)


def run() -> str:
    gib = float(os.environ.get("BENCH_SPEED_GIB", "1"))
    rounds = int(os.environ.get("BENCH_SPEED_ROUNDS", "3"))
    compare = os.environ.get("BENCH_SPEED_COMPARE")
    images = int(os.environ.get("BENCH_INGEST_IMAGES", "2000"))
    size = int(gib * GIB)
    ingests: list[_Target] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-speed-", dir=os.environ.get("TMPDIR")) as t:
        tmp = Path(t)
        src = tmp / "source.bin"
        block = os.urandom(MIB)
        with open(src, "wb") as f:
            for _ in range(size // MIB):
                f.write(block)
            f.write(block[: size % MIB])
        sink_dir = tmp / "sink"
        sink_dir.mkdir()
        sink_port = _free_port()
        sink_proc = subprocess.Popen(
            [sys.executable, "-m", "bench.upload_speed", "sink", str(sink_port), str(sink_dir)],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        sink_url = f"http://127.0.0.1:{sink_port}"
        gateways: list[tuple[str, _Gateway]] = []
        s3: _S3 | None = None
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", sink_port), 1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("socket sink did not start") from None
                    time.sleep(0.1)
            gateways.append(("this tree", _Gateway(ROOT, tmp / "gw")))
            if compare:
                # The other tree runs as a fresh install of it would: where its dependencies
                # do not name httptools (main before the upload work), on uvicorn's h11
                # fallback, even though this venv has httptools (a sitecustomize hides it).
                shim: Path | None = None
                if "httptools" not in (Path(compare) / "pyproject.toml").read_text():
                    shim = tmp / "no-httptools"
                    shim.mkdir()
                    hide = "import sys\nsys.modules['httptools'] = None\n"
                    (shim / "sitecustomize.py").write_text(hide)
                gateways.append((f"`{compare}`",
                                 _Gateway(Path(compare), tmp / "gw-compare", shim)))
            targets = [_Target("raw socket → file (baseline)",
                               lambda: _sink_upload(sink_url, src, size), sink_proc.pid)]
            for label, gw in gateways:
                targets += [
                    _Target(f"{label}: POST /upload raw body", partial(gw.upload_raw, src),
                            gw.proc.pid, gw.settle),
                    _Target(f"{label}: POST /upload multipart",
                            partial(gw.upload_multipart, src), gw.proc.pid, gw.settle),
                    _Target(f"{label}: tus PATCH", partial(gw.tus_patch, src), gw.proc.pid,
                            gw.settle),
                ]  # fmt: skip
            if _s3_wanted():
                s3 = _S3(tmp / "seaweed")
                gw = _Gateway(ROOT, tmp / "gw-s3", extra_env=s3.env)
                gateways.append(("S3", gw))
                targets += [
                    _Target("S3 store: put_file (object-storage baseline)",
                            partial(s3.put_file, src), s3.server.proc.pid),
                    _Target("this tree on S3: POST /upload raw body",
                            partial(gw.upload_raw, src), gw.proc.pid, gw.settle),
                    _Target("this tree on S3: tus PATCH", partial(gw.tus_patch, src),
                            gw.proc.pid, gw.settle),
                ]  # fmt: skip
            if images and s3 is not None:
                zipped = tmp / "images.zip"
                _image_zip(zipped, images)
                for label, gw in (("local DATA_DIR", gateways[0][1]), ("S3", gateways[-1][1])):
                    ingests.append(_Target(f"ingest on {label}",
                                           partial(gw.ingest, zipped, images), gw.proc.pid))
            for i in range(rounds):
                for target in targets + ingests:
                    _timed(target, src)
                    print(f"round {i + 1}: {target.name}: {target.times[-1]:.2f} s, "
                          f"load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
        finally:
            for _, gw in gateways:
                gw.close()
            sink_proc.terminate()
            sink_proc.wait(10)
            if s3 is not None:
                s3.server.stop()
    load_after = os.getloadavg()
    base = min(targets[0].times)
    lines = [
        "## Upload speed (`POST /upload` and tus PATCH against a raw socket)",
        "",
        f"{gib:g} GiB file sent by curl (`-T`, or `-F` for multipart; `Expect:` off) over "
        "loopback; the baseline is a socket server (own process) writing the body to a file "
        "with `recv_into` a 1 MiB buffer, in the same directory as the gateway's data "
        f"(`python -m gateway`, own process). {rounds} interleaved rounds, a `sync` before "
        "each target (outside the timing), best counts; "
        f"ratio = baseline time / target time. Machine: {os.cpu_count()} CPU cores; load "
        f"average {load_before[0]:.2f} before, {load_after[0]:.2f} after (`uptime`).",
        "",
        "| target | best s | MiB/s | ratio | all runs s | CPU s (least) | minor faults (least) "
        "| peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    store_base = next((min(t.times) for t in targets if t.name.startswith("S3 store")), None)
    for target in targets:
        best = min(target.times)
        runs = ", ".join(f"{x:.2f}" for x in target.times)
        # Rows on S3 get a second ratio: against the store's own put_file of the same file.
        vs_store = (f" ({store_base / best:.2f} of put_file)"
                    if store_base is not None and "S3" in target.name else "")
        lines.append(f"| {target.name} | {best:.2f} | {size / MIB / best:.0f} "
                     f"| {base / best:.2f}{vs_store} | {runs} | {min(target.cpu):.2f} "
                     f"| {min(target.faults)} | {target.peak_mib:.0f} |")
    if ingests:
        local_best = min(ingests[0].times)
        lines += [
            "",
            f"Ingest of a zip of {images} distinct 64×64 PNGs (~12 KiB each, stored) by the "
            "same two gateways, from the request's start to the job leaving `ingesting`; "
            "ratio = local time / target time.",
            "",
            "| target | best s | images/s | ratio | all runs s | peak RSS MiB |",
            "|---|---|---|---|---|---|",
        ]
        for target in ingests:
            best = min(target.times)
            runs = ", ".join(f"{x:.2f}" for x in target.times)
            lines.append(f"| {target.name} | {best:.2f} | {images / best:.0f} "
                         f"| {local_best / best:.2f} | {runs} | {target.peak_mib:.0f} |")
    lines += [
        "",
        "Peak RSS, CPU seconds (user + system) and minor page faults are the server process's "
        "(the gateway's whole import set, DB and scheduler included; the sink is this module's "
        "process; the store's for the S3 baseline), counted from the request's start to its "
        "answer, the job's or file's removal after it not included. A load average above the "
        "core count means neighbours took CPU during the run: every time is then longer and "
        "the ratios noisier (CPU seconds less so); compare rows of one run only. What the "
        "gateway does to go at the wire's speed: README, \"Decisions\", \"Upload speed\".",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "sink":
        sink(int(sys.argv[2]), Path(sys.argv[3]))
    else:
        out = run()
        (Path(__file__).parent / "last_upload_speed.md").write_text(out)
        print(out)
