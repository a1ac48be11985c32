"""One job of tiny generated images through a local stack, run from any checkout.

`python bench/stack_run.py N [--probe]` with PYTHONPATH set to the checkout under test: it
starts that checkout's stack (`mattepipe.stack`, as `make run` does) on free ports, uploads
one zip of N 32×32 PNGs with `model=identity`, waits for the job and prints one JSON line of
figures. It imports nothing from `bench`, so the same file measures the baseline commit's
stack side by side with this one (`bench.scale`).

The JSON line has `cpu_ms_per_task`: the stack's CPU time (all services, user + system) from
the job's start of running to its end, per completed task. `--profile S` records S seconds of
py-spy per service; BENCH_PROFILE_DIR keeps the raw folded
stacks there.

With `--probe` it also samples the gateway's RSS (the run and the probes), times `/status`
while the job runs, pages `GET /jobs/{id}/tasks` at depth 0 and near the end, times the
gallery's first page and the download against reading the same files (the zip's members,
after an `os.sync()`, once before the downloads and once after them, `read_s` their mean; the
time to the first byte, the zip's preparation, is kept apart too): the 100 000-image figures
of `bench.scale`. The download is timed twice: by httpx in this process (`download_s`, with
`download_client_cpu_s`, this thread's CPU) and by `curl -s -o /dev/null` (`curl_s`), each
with the gateway's CPU seconds over it (`*_gateway_cpu_s`) beside the read's (`read_cpu_s`):
on a shared machine the CPU seconds are the figures that hold. BENCH_DOWNLOAD_SPY=<folder>
records py-spy (500 Hz) on the gateway over the httpx download (BENCH_SPY_NATIVE=1: with
native frames); BENCH_KEEP_DIR=<folder> keeps the DATA_DIR (and says `job_id`), to serve the
same job again from a gateway alone. `--status` samples `/status` (per phase: ingesting,
running) and the RSS but skips the other probes (issue 17's `/status` p99 figure).
BENCH_IMAGE_SIDE=<px> makes the images that size instead of 32 (the download's figures for
members of ordinary sizes). `--deadline S` stops waiting S seconds after the upload and
probes the job as it is then (a partial download).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import socket
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

FINAL = ("completed", "completed_with_errors", "failed", "cancelled")
STORED_ZIP = "job.zip"
"""`gateway.results.stored_zip.STORED_ZIP`, written out: this script imports nothing of the
tree it measures, which may be older than the stored zip (tests/bench checks the two agree)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tiny_zip(n: int, size: int = 32) -> bytes:
    """n distinct size×size PNGs in folders of 1 000 (a few distinct pixels each)."""
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([xx * 255 // size, yy * 255 // size, (xx + yy) * 127 // size], axis=2)
    base = base.astype(np.uint8)  # a smooth gradient: ~150-byte PNGs, a small zip
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for i in range(n):
            img = base.copy()
            img[0, :4, 0] = np.frombuffer(i.to_bytes(4, "big"), np.uint8)  # no two alike
            b = io.BytesIO()
            Image.fromarray(img).save(b, "PNG", compress_level=1)
            zf.writestr(f"d{i // 1000:03d}/img_{i:06d}.png", b.getvalue())
    return buf.getvalue()


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _gateway_pid(port: int) -> int | None:
    """The process listening on `port` (the gateway), from /proc (no psutil needed)."""
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if int(f[1].split(":")[1], 16) == port and f[3] == "0A":
                inode = f[9]
                break
    if inode is None:
        return None
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return int(pid)
        except OSError:
            continue
    return None


def _tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system) used so far by `root` and its live descendants (the
    stack's services), from /proc: a figure the machine's other load disturbs far less than
    wall-clock rates do (py-spy, if running, is not below `root`)."""
    return sum(_tree_cpu_by_service(root).values())


def service_label(pid: int) -> str:
    """`--worker-id X` → X, `-m module` → module, else the program's name (the supervisor).

    The one labelling of a stack's processes (`bench.proctree` uses it too); it lives here
    because this script must run on its own against another checkout on PYTHONPATH."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return str(pid)
    for flag in ("--worker-id", "-m"):
        if flag in argv[:-1]:
            return argv[argv.index(flag) + 1]
    return Path(argv[0]).name if argv and argv[0] else str(pid)


def _tree_cpu_by_service(root: int) -> dict[str, float]:
    """`_tree_cpu_s` split by service (`service_label`): which process of the stack the CPU
    per task goes to: one busy process (the GIL) caps the stage it serves."""
    kids: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2:].split()
        pid = int(stat.parent.name)
        stats[pid] = fields
        kids.setdefault(int(fields[1]), []).append(pid)
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        f = stats.get(pid)
        if f is not None:
            label = service_label(pid)
            out[label] = out.get(label, 0.0) + (int(f[11]) + int(f[12])) / tick  # utime, stime
        todo.extend(kids.get(pid, ()))
    return out


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return 0.0
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


class _Sampler(threading.Thread):
    """Gateway RSS every `every` seconds until `stop` (the probes included: the download's
    memory counts), and /status latency while the job runs (until `running` is cleared)."""

    def __init__(self, url: str, job_id: str, pid: int | None, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.url, self.job_id, self.pid, self.every = url, job_id, pid, every
        self.rss: list[float] = []
        self.status_ms: list[float] = []
        self.status_state: list[str] = []
        """The job's state each `/status` answer gave (its phase: ingesting, running…)."""
        self.stop = threading.Event()
        self.running = threading.Event()
        self.running.set()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as c:
            while not self.stop.is_set():
                if self.pid:
                    self.rss.append(_rss_mb(self.pid))
                if self.running.is_set():
                    t0 = time.perf_counter()
                    r = c.get(f"/status/{self.job_id}")
                    self.status_ms.append((time.perf_counter() - t0) * 1000)
                    try:
                        self.status_state.append(str(r.json().get("state")))
                    except ValueError:
                        self.status_state.append("?")
                self.stop.wait(self.every)


def _timed(c: httpx.Client, path: str, **params: Any) -> tuple[float, httpx.Response]:
    t0 = time.perf_counter()
    r = c.get(path, params=params)
    return (time.perf_counter() - t0) * 1000, r


def _probe_results(c: httpx.Client, job_id: str, data_dir: Path, n: int,
                   final: bool, gateway_pid: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # keyset paging: depth 0 against depth ~0.9 n, best of 3 each
    first = [_timed(c, f"/jobs/{job_id}/tasks", limit=100) for _ in range(3)]
    out["page0_ms"] = min(t for t, _ in first)
    deep_after = None
    body = first[0][1].json()
    ids = [t["id"] for t in body["tasks"]]
    if ids:
        deep_after = ids[0] + int(0.9 * n)
    offset_ms = [_timed(c, f"/jobs/{job_id}/tasks", limit=100, offset=int(0.9 * n))[0]
                 for _ in range(3)]
    out["page_deep_offset_ms"] = min(offset_ms)
    if deep_after is not None:
        deep = [_timed(c, f"/jobs/{job_id}/tasks", limit=100, after=deep_after)
                for _ in range(3)]
        out["page_deep_after_ms"] = min(t for t, _ in deep)
        out["page_deep_after_ok"] = deep[0][1].status_code == 200 and bool(
            deep[0][1].json().get("tasks"))
    # gallery: its first page and first API call
    g_ms, g = _timed(c, f"/jobs/{job_id}/gallery", limit=100)
    out["gallery_ms"] = g_ms
    out["gallery_status"] = g.status_code
    # download against reading the same files (the zip's members: cut-outs, sheets, report;
    # not the sheets' metrics.json, which the zip leaves out), side by side
    job_dirs = [p for p in (data_dir / "matting_output" / job_id,
                            data_dir / "final_results" / job_id,
                            data_dir / "reports" / job_id) if p.exists()]
    if final:  # the report is written as the job ends: wait for it, not for its temp folder
        reports = data_dir / "reports" / job_id
        until = time.monotonic() + 300
        while time.monotonic() < until and not all(
                (reports / n).exists() for n in ("report.json", "report.csv", "index.html")):
            time.sleep(0.5)
    if final and importlib.util.find_spec("gateway.results.stored_zip") is not None:
        # a tree that stores a finished job's zip (ZIP_STORE, on in the stack): the download
        # is of that file once it is there; the wait is part of the figures
        t_zip, until = time.monotonic(), time.monotonic() + 1800
        while time.monotonic() < until and not (reports / STORED_ZIP).is_file():
            time.sleep(0.1)
        out["zip_stored_wait_s"] = time.monotonic() - t_zip
    # a report being written meanwhile sits in a `.report-*` folder that may vanish: skip it;
    # the stored zip is not one of the zip's members
    files = [p for d in job_dirs for p in d.rglob("*")
             if not any(part.startswith(".") for part in p.relative_to(d).parts)
             and p.is_file() and not p.name.endswith("_metrics.json")
             and p.name != STORED_ZIP]
    # the job's files written back first: a read during the writeback of a big job's
    # outputs took three times as long as one after it (issue 17, 100 000 images)
    os.sync()
    read_s, read_bytes, out["read_cpu_s"] = _read_files(files)
    t0 = time.perf_counter()
    got = 0
    params = {} if final else {"partial": "1"}
    first_byte = None
    spy = _spy_download(gateway_pid)
    gw_cpu0, cli_cpu0 = _cpu_s(gateway_pid), time.thread_time()
    with c.stream("GET", f"/download/{job_id}", params=params) as r:
        out["download_status"] = r.status_code
        out["download_stored"] = r.headers.get("accept-ranges") == "bytes"
        for chunk in r.iter_raw(1 << 20):
            if first_byte is None:
                first_byte = time.perf_counter() - t0
            got += len(chunk)
    dl_s = time.perf_counter() - t0
    out["download_gateway_cpu_s"] = _cpu_s(gateway_pid) - gw_cpu0
    out["download_client_cpu_s"] = time.thread_time() - cli_cpu0
    if spy is not None:
        out["download_profile"] = _spy_summary(*spy)
    out["download_first_byte_s"] = first_byte or dl_s
    out.update(_curl_download(str(c.base_url), job_id, params, gateway_pid))
    again_s, _, again_cpu_s = _read_files(files)  # the downloads between two reads
    out.update(read_files=len(files), read_bytes=read_bytes, read_s=(read_s + again_s) / 2,
               read_each_s=[read_s, again_s], read_cpu_s=(out["read_cpu_s"] + again_cpu_s) / 2,
               download_bytes=got, download_s=dl_s)
    return out


def _read_files(files: list[Path]) -> tuple[float, int, float]:
    """(seconds, bytes, this thread's CPU seconds) of one plain read of `files`."""
    t0, cpu0 = time.perf_counter(), time.thread_time()
    got = 0
    for p in files:
        with contextlib.suppress(FileNotFoundError), open(p, "rb") as f:
            got += len(f.read())
    return time.perf_counter() - t0, got, time.thread_time() - cpu0


def _cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) of one process so far (0 when unknown)."""
    if not pid:
        return 0.0
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    f = text[text.rfind(")") + 2:].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def _curl_download(url: str, job_id: str, params: dict[str, str], gateway_pid: int | None
                   ) -> dict[str, Any]:
    """The same download by `curl -s -o /dev/null` (a client in C, reading into nothing):
    the gateway's side of the download without the bench's Python client on the same cores.
    Empty when there is no curl."""
    import shutil
    import subprocess

    curl = shutil.which("curl")
    if curl is None:
        return {}
    query = "?partial=1" if params else ""
    gw0, t0 = _cpu_s(gateway_pid), time.perf_counter()
    done = subprocess.run(
        [curl, "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_starttransfer}",
         f"{url.rstrip('/')}/download/{job_id}{query}"],
        capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    code, size, first = ([*done.stdout.split(), "0", "0", "0"])[:3]
    return {"curl_status": int(code), "curl_bytes": int(size), "curl_s": wall,
            "curl_first_byte_s": float(first),
            "curl_gateway_cpu_s": _cpu_s(gateway_pid) - gw0}


def _spy_download(pid: int | None) -> tuple[Any, Path] | None:
    """py-spy on the gateway for the download (BENCH_DOWNLOAD_SPY=<folder>: the raw folded
    stacks kept there as download.txt; BENCH_SPY_NATIVE=1 adds native frames)."""
    keep, spy = os.environ.get("BENCH_DOWNLOAD_SPY"), _pyspy()
    if not keep or spy is None or not pid:
        return None
    import subprocess

    Path(keep).mkdir(parents=True, exist_ok=True)
    f = Path(keep) / "download.txt"
    cmd = [spy, "record", "--pid", str(pid), "--rate", "500", "--format", "raw",
           "--output", str(f), "--threads"]
    if os.environ.get("BENCH_SPY_NATIVE"):
        cmd.append("--native")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # py-spy attaches
    return proc, f


def _spy_summary(proc: Any, f: Path) -> dict[str, Any]:
    import signal

    proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
    summary: dict[str, Any] = _profile_summary({"gateway": (proc, f)}, top=15)["gateway"]
    return summary


def _pyspy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else None


def _start_profiles(ports: dict[str, int], seconds: float, out: Path) -> dict[str, Any]:
    """py-spy on each service (by its listening port) for `seconds`, raw folded stacks."""
    spy = _pyspy()
    procs: dict[str, Any] = {}
    if spy is None:
        return procs
    import subprocess

    for name, port in ports.items():
        pid = _gateway_pid(port)
        if pid is None:
            continue
        f = out / f"{name}.txt"
        procs[name] = (subprocess.Popen(
            [spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "50",
             "--format", "raw", "--output", str(f), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), f)
    return procs


def _profile_summary(procs: dict[str, Any], top: int = 8) -> dict[str, Any]:
    """Per process: samples and the `top` functions by own time (share of its samples)."""
    out: dict[str, Any] = {}
    for name, (proc, f) in procs.items():
        try:
            proc.wait(120)
        except Exception:
            proc.kill()
        own: dict[str, int] = {}
        total = 0
        try:
            lines = Path(f).read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            frames = [fr for fr in stack.split(";") if fr]
            leaf = frames[-1] if frames else "?"
            n = int(count)
            total += n
            own[leaf] = own.get(leaf, 0) + n
        best = sorted(own.items(), key=lambda kv: -kv[1])[:top]
        out[name] = {"samples": total,
                     "top": [[k, round(100.0 * v / max(1, total), 1)] for k, v in best]}
    return out


def run(n: int, probe: bool, profile_s: float = 0.0, deadline_s: float = 0.0,
        status_only: bool = False) -> dict[str, Any]:
    from mattepipe.stack import health_urls, start_stack, stop_stack, wait_healthy
    from shared.settings import Settings

    blob = tiny_zip(n, int(os.environ.get("BENCH_IMAGE_SIDE", "32")))
    keep = os.environ.get("BENCH_KEEP_DIR")  # the job's DATA_DIR kept there (`job_id` in
    # the JSON line): a gateway started on it alone downloads the same zip again and again
    with (contextlib.nullcontext(keep) if keep else tempfile.TemporaryDirectory()) as tmp:
        base = Path(tmp)
        ports = {k: _free_port() for k in ("gw", "ma", "ca", "mw", "cw")}
        # worker ports count up from the first: keep them apart
        settings = Settings(
            data_dir=base / "data", models_dir=base / "models",
            gateway_port=ports["gw"], matting_api_port=ports["ma"],
            comparison_api_port=ports["ca"], matting_worker_port=ports["mw"],
            comparison_worker_port=ports["mw"] + 40,
            matting_api_url=f"http://127.0.0.1:{ports['ma']}",
            comparison_api_url=f"http://127.0.0.1:{ports['ca']}",
            default_model="identity", max_jobs_per_hour=0, max_jobs_per_day=0,
        )
        proc = start_stack(settings, quiet=True)
        try:
            wait_healthy(health_urls(settings), timeout=300)
            url = f"http://127.0.0.1:{settings.gateway_port}"
            pid = _gateway_pid(settings.gateway_port)
            with httpx.Client(base_url=url, timeout=600) as c:
                load_start = os.getloadavg()[0]
                t_up = time.perf_counter()
                job = c.post("/upload", content=blob, params={"model": "identity"},
                             headers={"Content-Type": "application/zip"}).json()
                job_id = job["job_id"]
                spies: dict[str, Any] = {}
                if profile_s > 0:
                    # past ingest, into the stages: the tasks/s window starts at the first
                    # dispatch, so the profile should too
                    t_wait = time.perf_counter()
                    while time.perf_counter() - t_wait < 120:
                        if c.get(f"/status/{job_id}").json()["state"] != "ingesting":
                            break
                        time.sleep(0.2)
                    time.sleep(1.0)
                    spies = _start_profiles(
                        {"gateway": settings.gateway_port,
                         "matting_api": settings.matting_api_port,
                         "comparison_api": settings.comparison_api_port,
                         "matting_worker_1": settings.matting_worker_port,
                         "comparison_worker_1": settings.comparison_worker_port},
                        profile_s, base)
                sampler = _Sampler(url, job_id, pid) if probe else None
                if sampler:
                    sampler.start()
                last_log = 0.0
                cpu_at_start: float | None = None
                cpu_split_at_start: dict[str, float] = {}
                while True:
                    st = c.get(f"/status/{job_id}").json()
                    if cpu_at_start is None and st["state"] != "ingesting":
                        cpu_split_at_start = _tree_cpu_by_service(proc.pid)
                        cpu_at_start = sum(cpu_split_at_start.values())  # the stages' work
                    if st["state"] in FINAL:
                        break
                    if time.perf_counter() - last_log > 30:
                        last_log = time.perf_counter()
                        print(f"{time.perf_counter() - t_up:.0f}s {st['state']} "
                              f"{st['completed']}/{n}", file=sys.stderr, flush=True)
                    if deadline_s and time.perf_counter() - t_up > deadline_s:
                        break
                    time.sleep(0.5)
                wall = time.perf_counter() - t_up
                if sampler:
                    sampler.running.clear()
                res: dict[str, Any] = {
                    "n": n, "job_id": job_id, "state": st["state"],
                    "completed": st["completed"],
                    "failed": st["failed"], "wall_s": wall,
                    "started_at": st.get("started_at"), "finished_at": st.get("finished_at"),
                    "loadavg_start": load_start,
                }
                if cpu_at_start is not None and st["completed"]:
                    cpu_s = _tree_cpu_s(proc.pid) - cpu_at_start
                    res["stack_cpu_s"] = cpu_s
                    res["cpu_ms_per_task"] = 1000.0 * cpu_s / st["completed"]
                    split = _tree_cpu_by_service(proc.pid)
                    res["cpu_ms_per_task_by_service"] = {
                        k: round(1000.0 * (v - cpu_split_at_start.get(k, 0.0))
                                 / st["completed"], 3)
                        for k, v in sorted(split.items())}
                if st.get("started_at") and st.get("finished_at"):
                    res["stage_s"] = st["finished_at"] - st["started_at"]
                    res["tasks_per_s"] = st["completed"] / max(1e-9, res["stage_s"])
                if spies:
                    res["profile"] = _profile_summary(spies)
                    keep = os.environ.get("BENCH_PROFILE_DIR")
                    if keep:  # the raw folded stacks, for a closer look (py-spy's format)
                        Path(keep).mkdir(parents=True, exist_ok=True)
                        for name, (_, f) in spies.items():
                            if Path(f).exists():
                                Path(keep, f"{name}.txt").write_bytes(Path(f).read_bytes())
                if sampler:
                    res["status_p50_ms"] = _pct(sampler.status_ms, 0.5)
                    res["status_p99_ms"] = _pct(sampler.status_ms, 0.99)
                    res["status_max_ms"] = max(sampler.status_ms, default=0.0)
                    res["status_samples"] = len(sampler.status_ms)
                    for phase in ("ingesting", "running"):  # the tail, phase by phase
                        ms = [t for t, st_ in zip(sampler.status_ms, sampler.status_state,
                                                  strict=False) if st_ == phase]
                        res[f"status_{phase}_n"] = len(ms)
                        res[f"status_{phase}_p50_ms"] = _pct(ms, 0.5)
                        res[f"status_{phase}_p99_ms"] = _pct(ms, 0.99)
                    res["loadavg_end"] = os.getloadavg()[0]
                    res["rss_run_max_mb"] = max(sampler.rss, default=0.0)
                    if not status_only:
                        res.update(_probe_results(c, job_id, settings.data_dir, n,
                                                  st["state"] in FINAL, pid))
                    sampler.stop.set()
                    sampler.join()
                    res["rss_max_mb"] = max(sampler.rss, default=0.0)  # run and probes
                    res["rss_samples"] = len(sampler.rss)
                    res["rss_after_mb"] = _rss_mb(pid) if pid else 0.0
        finally:
            stop_stack(proc)
    return res


if __name__ == "__main__":
    args = sys.argv[1:]
    prof = float(args[args.index("--profile") + 1]) if "--profile" in args else 0.0
    until = float(args[args.index("--deadline") + 1]) if "--deadline" in args else 0.0
    status = "--status" in args  # the /status figures (and RSS) without the other probes
    print(json.dumps(run(int(args[0]), "--probe" in args or status, prof, until, status)),
          flush=True)
