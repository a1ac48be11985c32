"""`python -m bench download_alone`: one finished job's zip downloaded by `curl` from a gateway
alone, this checkout against a baseline commit, side by side, against reading the same files.

The job is made once by the baseline's stack (`bench/stack_run.py`, `identity`, its DATA_DIR
kept), so its database is at the older schema revision: each tree's gateway then opens its own
copy of that database (DATABASE_URL), and this checkout's migrates its copy forward without
taking the baseline's away from it. BENCH_DOWNLOAD_IMAGES images (default 20 000) of
BENCH_IMAGE_SIDE px (default 32: ~5 KB outputs, where the per-member work is the cost; 512: ~30
KB ones, where the bytes are). Then for BENCH_DOWNLOAD_ROUNDS rounds, each tree in turn: a
gateway of that tree is started alone on the kept DATA_DIR, downloads once to warm up, then
three times `curl -s -o /dev/null`, each between two plain reads of the zip's files
(`open().read()` in this process: the figure issue 17 holds the download to, ≥ 0.9× its speed).
The gateway's CPU seconds over each download are read from /proc, with its zip processes'
(reaped before the zip's last bytes), `curl`'s and the machine's idle share; beside the plain
read, the least a zip of the same files must do in one thread (open, `fstat`, read, close,
CRC-32 per file). From them a budget: the download's CPU spread over the usable cores is the
shortest it could take here, so read ÷ that is the best ratio this machine allows, whatever
the zip's code. Baseline:
BENCH_DOWNLOAD_BASELINE (default 0573631, main before the download's fifth pass), unpacked with
`git archive` as `bench.scale` does.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

from bench.proctree import cpu_s
from bench.scale import ROOT, _baseline_tree
from gateway.results.stored_zip import STORED_ZIP
from gateway.results.zip_processes import process_count

__all__ = ["run"]

IMAGES = int(os.environ.get("BENCH_DOWNLOAD_IMAGES", "20000"))
SIDE = int(os.environ.get("BENCH_IMAGE_SIDE", "32"))
BASELINE = os.environ.get("BENCH_DOWNLOAD_BASELINE", "0573631")
ROUNDS = int(os.environ.get("BENCH_DOWNLOAD_ROUNDS", "2"))
DOWNLOADS = 3
"""Timed downloads per gateway start."""
STORE_WAIT_S = 1800.0
"""Longest the stored column waits for its gateway to store the zip."""
COLUMNS = {"base": {}, "sent": {"ZIP_STORE": "false"}, "stored": {"ZIP_STORE": "true"}}
"""The baseline; this checkout with the zip made as it is sent; this checkout with the zip
stored once (ZIP_STORE, the default) and sent as a file."""


def _busy() -> tuple[int, int]:
    """The machine's (idle, total) jiffies so far, every CPU together (/proc/stat)."""
    cpu = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return cpu[3] + cpu[4], sum(cpu)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _make_job(keep: Path, tree: Path) -> str:
    """The job, made by `tree`'s stack with this checkout's `stack_run.py` (it imports only
    the tree under test)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "BENCH_KEEP_DIR": str(keep),
           "BENCH_IMAGE_SIDE": str(SIDE)}
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "stack_run.py"), str(IMAGES)],
                       cwd=tree, env=env, capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"stack_run.py: {r.stderr[-2000:]}")
    job: dict[str, object] = json.loads(r.stdout.strip().splitlines()[-1])
    if job.get("state") != "completed":
        raise RuntimeError(f"the job did not complete: {job}")
    return str(job["job_id"])


def _files(data: Path, job_id: str) -> list[str]:
    """The zip's members as files: cut-outs, sheets (not the metrics files) and the report."""
    found = [p for area in ("matting_output", "final_results")
             for p in (data / area / job_id).rglob("*")
             if p.is_file() and not p.name.endswith(".json")]
    found += [p for p in (data / "reports" / job_id).iterdir()
              if p.is_file() and p.name != STORED_ZIP and not p.name.startswith(".")]
    return [str(p) for p in found]


def _read(files: list[str]) -> float:
    t0 = time.perf_counter()
    for name in files:
        with open(name, "rb") as f:
            f.read()
    return time.perf_counter() - t0


def _floor(files: list[str]) -> float:
    """The least a zip of `files` must do, in one thread: open each (no symlink followed),
    `fstat` it (a plain file? its size and time), read it whole, close it, CRC-32 its bytes."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    t0 = time.perf_counter()
    for name in files:
        fd = os.open(name, flags)
        try:
            zlib.crc32(os.read(fd, os.fstat(fd).st_size))
        finally:
            os.close(fd)
    return time.perf_counter() - t0


def _curl(port: int, job_id: str) -> tuple[float, int, float]:
    """(seconds, bytes, curl's CPU seconds) of one download."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}",
                          f"http://127.0.0.1:{port}/download/{job_id}"],
                         capture_output=True, text=True, check=True).stdout
    took = time.perf_counter() - t0
    now = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = now.ru_utime + now.ru_stime - used.ru_utime - used.ru_stime
    return took, int(out), cpu


def _rounds(tree: Path, data: Path, db: Path, job_id: str,
            extra: dict[str, str]) -> list[dict[str, float]]:
    """One gateway of `tree` alone on `data` and its own database file `db`, with `extra`
    in its environment: a warm-up download (the first one also writes the job's report
    files, if the stack had not yet), then DOWNLOADS timed ones. With ZIP_STORE on, the
    stored zip is removed before the gateway starts, and the time and CPU (the gateway's
    and its zip processes') from its start to the zip stored again are in each row."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(tree), "DATA_DIR": str(data),
           "DATABASE_URL": f"sqlite+aiosqlite:///{db}",
           "GATEWAY_PORT": str(port), "GATEWAY_HOST": "127.0.0.1", **extra}
    stored = data / "reports" / job_id / STORED_ZIP
    stored.unlink(missing_ok=True)
    log = db.with_suffix(".log")
    with log.open("ab") as errors:
        proc = subprocess.Popen([sys.executable, "-m", "gateway"], cwd=tree, env=env,
                                stdout=subprocess.DEVNULL, stderr=errors)
    try:
        deadline = time.monotonic() + 180  # a big job's database: its migration at start
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    tail = log.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"the gateway of {tree} did not start:\n{tail}"
                                       ) from None
                time.sleep(0.1)
        store = {}
        if extra.get("ZIP_STORE") == "true":
            (own0, kids0), t0 = cpu_s(proc.pid), time.monotonic()
            while not stored.is_file():
                if time.monotonic() - t0 > STORE_WAIT_S or proc.poll() is not None:
                    raise RuntimeError(f"the gateway of {tree} stored no zip")
                time.sleep(0.05)
            (own1, kids1) = cpu_s(proc.pid)
            store = {"store_s": time.monotonic() - t0,
                     "store_cpu_s": own1 - own0 + kids1 - kids0}
        _curl(port, job_id)
        files = _files(data, job_id)
        out = []
        for _ in range(DOWNLOADS):
            before = _read(files)
            (own0, kids0), idle0 = cpu_s(proc.pid), _busy()
            took, size, curl_cpu = _curl(port, job_id)
            (own1, kids1), idle1 = cpu_s(proc.pid), _busy()
            after = _read(files)
            floor = _floor(files)
            idle = (idle1[0] - idle0[0]) / max(idle1[1] - idle0[1], 1)
            out.append({"curl_s": took, "gateway_cpu_s": own1 - own0,
                        "processes_cpu_s": kids1 - kids0, "curl_cpu_s": curl_cpu,
                        "idle": idle, "read_s": (before + after) / 2, "floor_s": floor,
                        "bytes": size, "files": len(files), **store})
        return out
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _median(xs: list[dict[str, float]], key: str) -> float:
    return float(statistics.median(x[key] for x in xs))


def run() -> str:
    import bench.scale as scale

    if shutil.which("curl") is None:
        return "## The download from a gateway alone\n\nnot measured: no `curl` here\n"
    scale.BASELINE = BASELINE
    got: dict[str, list[dict[str, float]]] = {name: [] for name in COLUMNS}
    with tempfile.TemporaryDirectory() as tmp:
        base = _baseline_tree(Path(tmp) / "base")
        keep = Path(tmp) / "keep"
        keep.mkdir()
        job_id = _make_job(keep, base)
        data = keep / "data"
        dbs = {name: Path(tmp) / f"{name}.db" for name in got}
        for db in dbs.values():  # SQLite's own copy: a WAL left behind is in it too
            with (contextlib.closing(sqlite3.connect(data / "mattepipe.db")) as src,
                  contextlib.closing(sqlite3.connect(db)) as dst):
                src.backup(dst)
        for _ in range(ROUNDS):
            for name, extra in COLUMNS.items():
                got[name] += _rounds(base if name == "base" else ROOT, data, dbs[name],
                                     job_id, extra)
    sizes = {int(x["bytes"]) for xs in got.values() for x in xs}
    files = max(int(x["files"]) for xs in got.values() for x in xs)
    names = list(COLUMNS)

    def row(label: str, values: dict[str, str]) -> str:
        return "| " + " | ".join([label, *(values[n] for n in names)]) + " |"

    rows = []
    for label, key in (("curl download, request to last byte", "curl_s"),
                       ("gateway CPU over it", "gateway_cpu_s"),
                       ("its zip processes' CPU", "processes_cpu_s"),
                       ("curl's CPU", "curl_cpu_s"),
                       ("plain read of the same files", "read_s"),
                       ("a zip's least work on them, one thread (open, fstat, read, close, "
                        "CRC-32)", "floor_s")):
        rows.append(row(label, {n: f"{_median(got[n], key):.3f} s" for n in names}))
    cores = process_count(0)
    rows.append(row(f"the machine idle during the download ({cores} cores)",
                    {n: f"{_median(got[n], 'idle'):.0%}" for n in names}))
    best = {k: statistics.median(x["read_s"] / (x["gateway_cpu_s"] + x["processes_cpu_s"]
                                                + x["curl_cpu_s"]) * cores for x in v)
            for k, v in got.items()}
    rows.append(row("best ratio these CPU costs allow here: read ÷ (gateway + processes + "
                    "curl CPU ÷ cores)", {n: f"×{best[n]:.2f}" for n in names}))
    ratios = {k: sorted(x["read_s"] / x["curl_s"] for x in v) for k, v in got.items()}
    rows.append(row("download ÷ read (median; spread)",
                    {n: f"**×{statistics.median(v):.2f}** ({v[0]:.2f}–{v[-1]:.2f})"
                     for n, v in ratios.items()}))
    stores = got["stored"]
    store_s, store_cpu = _median(stores, "store_s"), _median(stores, "store_cpu_s")
    rows.append(row("the zip stored once, from the gateway's start: wall (CPU, gateway + "
                    "processes)", {"base": "–", "sent": "–",
                                   "stored": f"{store_s:.2f} s ({store_cpu:.2f} s)"}))
    return "\n".join([
        "## The download from a gateway alone (`python -m bench download_alone`, issue 17)",
        "",
        f"One finished job of {IMAGES} {SIDE}×{SIDE} images (`identity`, made by the "
        f"baseline's stack, each gateway on its own copy of its database; {files} members, "
        f"zip of {max(sizes)} bytes from every column: "
        f"{'the same' if len(sizes) == 1 else 'NOT the same'} length), served by a gateway "
        f"alone; {ROUNDS} rounds, each column's gateway started in turn, {DOWNLOADS} "
        "`curl -s -o /dev/null` downloads each between two plain reads of the files; "
        "medians. Columns: the baseline; this checkout with the zip made as it is sent "
        "(`ZIP_STORE=false`: a download before the zip is stored, or on S3); this checkout "
        "with the zip stored once after the job's report (`ZIP_STORE`, the default), "
        "removed before each of its gateway's starts so that every round stores it again. "
        "Target: the download at ≥ 0.9× the speed of the read. The budget: no download takes "
        "less than its CPU (the gateway's, its zip processes', curl's) spread over the "
        "cores, so the read ÷ that bounds the ratio however well they overlap; the least "
        "work row is what any zip of these files does per file, in one thread.",
        "",
        f"| figure | {BASELINE} | this checkout, made as sent | this checkout, stored |",
        "|---|---:|---:|---:|",
        *rows,
        "",
    ])
