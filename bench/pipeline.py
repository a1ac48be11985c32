"""Pipeline throughput against one bare process running the same model on the same images.

CPU (always): the whole supervised stack (gateway → balancers → 2 matting workers → comparison)
against `matte_folder` in one process. The stack does more (sheets, metrics, the DB), so the
ratio shows what the pipeline costs on this machine.

GPU (when CUDA is there): three matting workers at GPU_MEMORY_FRACTION 0.15 behind the matting
balancer, fed concurrently, against one bare process — the question "do several workers
keep one card busy" of the engines issue. The model is a small U-Net built here and saved as
TorchScript (no weights can be downloaded), large enough that the GPU does real work.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import mean, median
from typing import Any

import httpx
import numpy as np
from PIL import Image

from bench import stack_run

ROOT = Path(__file__).resolve().parent.parent
N_CPU_IMAGES = int(os.environ.get("BENCH_PIPELINE_IMAGES", "24"))
N_GPU_IMAGES = int(os.environ.get("BENCH_GPU_IMAGES", "480"))
UNET_C = int(os.environ.get("BENCH_UNET_CHANNELS", "48"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_job(c: httpx.Client, body: bytes) -> tuple[float, str, dict[str, Any]]:
    """Upload a zip to the stack behind `c` and wait for the job's end: (seconds from upload
    to the end, the job id, its last status).

    It waits as a user would, on the job's events stream (`GET /jobs/{id}/events`: its `end`
    event comes as the job is closed); a 0.2 s poll of `/status` added up to 0.2 s to every
    job, 3 % of a 7-second one (issue 14). Without a stream (429, or it ends early) it
    polls."""
    t0 = time.perf_counter()
    job = c.post("/upload", content=body, headers={"Content-Type": "application/zip"}).json()
    job_id = str(job["job_id"])
    st = _wait_end(c, job_id)
    return time.perf_counter() - t0, job_id, st


def _wait_end(c: httpx.Client, job_id: str) -> dict[str, Any]:
    """The job's final status, from its events stream, else by polling `/status`."""
    from mattepipe.client.sse import parse_events

    with c.stream("GET", f"/jobs/{job_id}/events") as r:
        if r.status_code == 200:
            for event in parse_events(r.iter_lines()):
                if event.name == "end":
                    end: dict[str, Any] = json.loads(event.data)
                    return end
    while True:
        st: dict[str, Any] = c.get(f"/status/{job_id}").json()
        if st["state"] not in ("uploading", "ingesting", "running"):
            return st
        time.sleep(0.2)


def _env() -> dict[str, str]:
    """Our processes import the checkout first, then whatever the caller's path held."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


def _studio_images(folder: Path, n: int, w: int = 640, h: int = 480,
                   seed: int = 0) -> list[Path]:
    """Objects on plain/gradient backdrops: the images bulk users have most."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for i in range(n):
        cx, cy, r = rng.uniform(0.35, 0.65) * w, rng.uniform(0.35, 0.65) * h, rng.uniform(60, 150)
        alpha = np.clip(r - np.hypot(xx - cx, yy - cy), 0.0, 1.0)[..., None]
        top, bottom = rng.uniform(180, 250, 3), rng.uniform(120, 200, 3)
        bg = top + (bottom - top) * (yy[..., None] / h)
        fg = rng.uniform(0, 255, 3)
        rgb = (alpha * fg + (1 - alpha) * bg).astype(np.uint8)
        p = folder / f"set{i % 4}" / f"img_{i:04d}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(p, quality=92)
        out.append(p)
    return out


def _oneshot(images_dir: Path, model: str, models_dir: Path, env: dict[str, str]) -> float:
    code = (
        "import sys, time; from pathlib import Path;"
        "from matting_worker.oneshot import matte_folder;"
        "r = matte_folder(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]));"
        "assert not r.failed, r.failed; print(r.done, r.seconds)"
    )
    out_dir = images_dir.parent / "oneshot_out"
    res = subprocess.run(
        [sys.executable, "-c", code, str(images_dir), str(out_dir), model, str(models_dir)],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    )
    done, seconds = res.stdout.split()[-2:]
    return int(done) / float(seconds)


def _cpu_section() -> str:
    from mattepipe.stack import health_urls, start_stack, stop_stack, wait_healthy
    from shared.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        images = base / "images"
        paths = _studio_images(images, N_CPU_IMAGES)
        body = _zip_of(paths, images)
        env = _env()
        bare = _oneshot(images, "classical", base / "models", env)

        ports = {k: _free_port() for k in ("gw", "ma", "ca", "mw", "cw")}
        settings = Settings(
            data_dir=base / "data", models_dir=base / "models",
            gateway_port=ports["gw"], matting_api_port=ports["ma"],
            comparison_api_port=ports["ca"], matting_worker_port=ports["mw"],
            comparison_worker_port=ports["cw"],
            matting_api_url=f"http://127.0.0.1:{ports['ma']}",
            comparison_api_url=f"http://127.0.0.1:{ports['ca']}",
        )
        proc = start_stack(settings, quiet=True)
        try:
            wait_healthy(health_urls(settings), timeout=300)
            url = f"http://127.0.0.1:{settings.gateway_port}"
            with httpx.Client(base_url=url, timeout=120) as c:
                elapsed, job_id, st = run_job(c, body)
                tasks = c.get(f"/jobs/{job_id}/tasks", params={"limit": 1000}).json()
        finally:
            stop_stack(proc)
        batches = [t["matting"]["batch_size"] for t in tasks["tasks"] if t["matting"]["batch_size"]]
        stack_rate = st["completed"] / elapsed
    return (
        f"### Pipeline against one process (CPU, this machine: {os.cpu_count()} cores)\n\n"
        f"{N_CPU_IMAGES} studio shots 640×480, engine `classical`. The stack's figure is "
        "upload to last comparison sheet (cut-out, sheet, metrics, DB); the baseline is "
        "`matte_folder` in one process (cut-outs only).\n\n"
        "| run | images/s | ratio |\n|---|---|---|\n"
        f"| one process (`mattepipe matte`) | {bare:.2f} | 1.00 |\n"
        f"| stack, 2 matting + 1 comparison worker | {stack_rate:.2f} "
        f"| {stack_rate / bare:.2f} |\n\n"
        f"State {st['state']}, mean matting batch size {mean(batches) if batches else 0:.2f}."
        "\n"
    )


BENCH_UNET = '''
import torch
from torch import nn

def block(i, o):
    return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(),
                         nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU())

class UNet(nn.Module):
    def __init__(self, c=48):
        super().__init__()
        self.e1, self.e2, self.e3 = block(3, c), block(c, 2 * c), block(2 * c, 4 * c)
        self.mid = block(4 * c, 8 * c)
        self.d3, self.d2, self.d1 = block(12 * c, 4 * c), block(6 * c, 2 * c), block(3 * c, c)
        self.out = nn.Conv2d(c, 1, 1)
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)

    def forward(self, x):
        a = self.e1(x); b = self.e2(self.pool(a)); c = self.e3(self.pool(b))
        m = self.mid(self.pool(c))
        c = self.d3(torch.cat([self.up(m), c], 1)); b = self.d2(torch.cat([self.up(c), b], 1))
        a = self.d1(torch.cat([self.up(b), a], 1))
        return torch.sigmoid(self.out(a))

torch.manual_seed(0)
import sys
torch.jit.script(UNet(int(sys.argv[2])).eval()).save(sys.argv[1])
'''


def build_unet(models: Path, channels: int, side: int, max_batch: int,
               env: dict[str, str]) -> Path:
    """`models`/bench_unet.pt: the bench's U-Net (`BENCH_UNET`) with `channels` channels as
    TorchScript, and its `.json` (fixed `side`² input, batches of up to `max_batch`)."""
    models.mkdir(parents=True, exist_ok=True)
    builder = models.parent / "build_unet.py"  # TorchScript needs the source in a file
    builder.write_text(BENCH_UNET)
    model = models / "bench_unet.pt"
    subprocess.run([sys.executable, str(builder), str(model), str(channels)], check=True,
                   env=env)
    (models / "bench_unet.json").write_text(
        f'{{"size_policy": "fixed", "input_size": [{side}, {side}], '
        f'"max_batch_size": {max_batch}}}')
    return model


GPU_STAGE_CONFIGS = ((1, 0.3), (2, 0.15), (3, 0.15), (3, 0.05), (4, 0.1))
"""(matting workers, GPU_MEMORY_FRACTION) of the matting-stage table: the question "how many
workers keep one card busy, in how much of its memory"."""
N_GPU_STACK_IMAGES = int(os.environ.get("BENCH_GPU_STACK_IMAGES", "2000"))
GPU_STACK_WORKERS = (3, 0.15)
"""The whole stack's matting workers and their share, from the stage table's best region."""
GPU_PROFILE_S = float(os.environ.get("BENCH_GPU_PROFILE_S", "8"))
"""py-spy on each service of the whole stack for this long (0: none; skipped without py-spy)."""
GPU_PROFILE_DELAY_S = 5.0
"""Into the timed job before the profiles start: past the upload and the ingest."""


class GpuUse(threading.Thread):
    """The card's utilisation (NVML: the share of the last sample period a kernel ran), every
    0.1 s while running; `mean` and `busy` (share of samples over 0 %) once stopped."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[int] = []
        self.halt = threading.Event()

    def run(self) -> None:
        import pynvml

        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError:
            return  # no NVIDIA driver here: no samples
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            while not self.halt.wait(0.1):
                self.samples.append(int(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu))
        finally:
            pynvml.nvmlShutdown()

    def stop(self) -> tuple[float, float]:
        self.halt.set()
        self.join()
        n = max(len(self.samples), 1)
        return sum(self.samples) / n, sum(1 for u in self.samples if u > 0) / n


BARE_RATE = """
import sys, time, torch
dev = "cuda" if torch.cuda.is_available() else "cpu"
kind = torch.float16 if dev == "cuda" else torch.float32
m = torch.jit.load(sys.argv[1], map_location=dev).eval().to(kind)
b, side = int(sys.argv[2]), int(sys.argv[3])
x = torch.rand(b, 3, side, side, device=dev, dtype=kind)
with torch.inference_mode():
    for _ in range(5):
        m(x)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    sync()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 5.0:
        m(x)
        n += 1
    sync()
    print(n * b / (time.perf_counter() - t0))
"""
"""The model alone: fp16 batches already on the card, back to back (what the workers' engine
runs, `TorchEngine` in fp16), no decode, copy or encode — the limit for the pipeline."""


def _bare_rate(model: Path, env: dict[str, str], batch: int = 16) -> float:
    res = subprocess.run([sys.executable, "-c", BARE_RATE, str(model), str(batch), "512"],
                         env=env, capture_output=True, text=True, check=True)
    return float(res.stdout.split()[-1])


def _stage_rate(env: dict[str, str], data: Path, paths: list[Path], workers: int,
                fraction: float, root: Path = ROOT) -> tuple[float, float, float]:
    """The matting stage alone: `workers` workers at `fraction` behind the balancer, fed 48
    requests at a time: (images/s, mean batch size, mean GPU utilisation %). `root`: the
    checkout whose services run (a baseline's, side by side; `env` then points there too)."""
    from mattepipe.stack import wait_healthy

    api_port = _free_port()
    worker_ports = [_free_port() for _ in range(workers)]
    token = secrets.token_urlsafe(32)  # the internal plane's token for this run
    wenv = {**env, "GPU_MEMORY_FRACTION": str(fraction), "MATTING_WORKERS": str(workers),
            "COMPARISON_WORKERS": "0", "MATTING_API_URL": f"http://127.0.0.1:{api_port}",
            "INTERNAL_TOKEN": token, "INTERNAL_HOST": "127.0.0.1"}
    procs = [
        subprocess.Popen([sys.executable, "-m", "matting_worker", "--port", str(p),
                          "--worker-id", f"gpu-worker-{i + 1}"], cwd=root, env=wenv,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for i, p in enumerate(worker_ports)
    ]
    urls = ",".join(f"http://127.0.0.1:{p}" for p in worker_ports)
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "matting_api", "--port", str(api_port), "--worker-urls", urls],
        cwd=root, env=wenv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        wait_healthy([f"http://127.0.0.1:{p}/health" for p in [*worker_ports, api_port]],
                     timeout=300)
        deadline = time.time() + 300  # the balancer's health says when every engine is loaded
        while httpx.get(f"http://127.0.0.1:{api_port}/health").json()["healthy_workers"] < workers:
            if time.time() > deadline:
                raise RuntimeError(f"{workers} matting workers never became healthy")
            time.sleep(0.2)
        rels = [p.relative_to(data).as_posix() for p in paths]

        def one(i_rel: tuple[int, str]) -> int:
            i, rel = i_rel
            body = {"task_id": i, "job_id": "bench", "input": rel,
                    "output": f"matting_output/bench/{i}.png", "params": {}}
            r = client.post(f"http://127.0.0.1:{api_port}/matting", json=body)
            r.raise_for_status()
            return int(r.json()["timings"]["batch_size"])

        with httpx.Client(timeout=300, limits=httpx.Limits(max_connections=64),
                          headers={"Authorization": f"Bearer {token}"}) as client:
            one((0, rels[0]))  # warm-up: first CUDA call of each process
            with ThreadPoolExecutor(48) as pool:
                list(pool.map(one, enumerate(rels[:48])))
            use = GpuUse()
            use.start()
            t0 = time.perf_counter()
            with ThreadPoolExecutor(48) as pool:
                sizes = list(pool.map(one, enumerate(rels)))
            rate = len(rels) / (time.perf_counter() - t0)
            util, _ = use.stop()
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
    return rate, mean(sizes), util


def _stack_rate(base: Path, models: Path, n: int) -> dict[str, Any]:
    """The whole stack (`mattepipe.stack`: gateway, both balancers, the matting workers on the
    card, comparison workers on the cores) on one uploaded zip of `n` studio shots: images/s
    from the upload to the job's end, and the card's utilisation over that time."""
    from mattepipe.stack import health_urls, start_stack, stop_stack, wait_healthy
    from shared.settings import Settings

    images = base / "stack_images"
    body = _zip_of(_studio_images(images, n), images)
    workers, fraction = GPU_STACK_WORKERS
    comparison = max(1, (os.cpu_count() or 2) // 4)
    ports = {k: _free_port() for k in ("gw", "ma", "ca", "mw")}  # workers count up from mw
    settings = Settings(
        data_dir=base / "stack_data", models_dir=models, default_model="bench_unet",
        max_batch_size=16, max_batch_delay_ms=5, gpu_memory_fraction=fraction,
        matting_workers=workers, comparison_workers=comparison,
        gateway_port=ports["gw"], matting_api_port=ports["ma"], comparison_api_port=ports["ca"],
        matting_worker_port=ports["mw"], comparison_worker_port=ports["mw"] + 50,
        matting_api_url=f"http://127.0.0.1:{ports['ma']}",
        comparison_api_url=f"http://127.0.0.1:{ports['ca']}",
        max_jobs_per_hour=0, max_jobs_per_day=0, result_cache=False,
    )
    proc = start_stack(settings, quiet=True)
    try:
        wait_healthy(health_urls(settings), timeout=300)
        with httpx.Client(base_url=f"http://127.0.0.1:{settings.gateway_port}",
                          timeout=600) as c:
            warm = _studio_images(base / "warm_images", 48, seed=1)  # not the timed images:
            run_job(c, _zip_of(warm, base / "warm_images"))  # each worker's first batches
            services = {"gateway": settings.gateway_port,
                        "matting_api": settings.matting_api_port,
                        "matting_worker_1": settings.matting_worker_port,
                        "comparison_api": settings.comparison_api_port,
                        "comparison_worker_1": settings.comparison_worker_port}
            spies: dict[str, Any] = {}
            later = threading.Timer(GPU_PROFILE_DELAY_S, lambda: spies.update(
                stack_run._start_profiles(services, GPU_PROFILE_S, base)))
            use = GpuUse()
            use.start()
            if GPU_PROFILE_S > 0:
                later.start()
            elapsed, _, st = run_job(c, body)
            util, busy = use.stop()
            later.cancel()
            if later.is_alive():
                later.join()
            profile = stack_run._profile_summary(spies, top=5)
    finally:
        stop_stack(proc)
    return {"rate": st["completed"] / elapsed, "completed": st["completed"], "n": n,
            "util": util, "busy": busy, "workers": workers, "fraction": fraction,
            "comparison": comparison, "seconds": elapsed, "profile": profile}


def _zip_of(paths: list[Path], root: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in paths:
            zf.write(p, p.relative_to(root).as_posix())
    return buf.getvalue()


def _gpu_section() -> str:
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        data = base / "data"
        images = data / "input" / "bench"
        paths = _studio_images(images, N_GPU_IMAGES)
        models = base / "models"
        env = {**_env(), "DATA_DIR": str(data),
               "MODELS_DIR": str(models), "DEFAULT_MODEL": "bench_unet",
               "MAX_BATCH_SIZE": "16", "MAX_BATCH_DELAY_MS": "5"}
        model = build_unet(models, UNET_C, 512, 16, env)
        limit = _bare_rate(model, env)
        bare = _oneshot(images, "bench_unet", models, env)
        stage = {cfg: _stage_rate(env, data, paths, *cfg) for cfg in GPU_STAGE_CONFIGS}
        stack = _stack_rate(base, models, N_GPU_STACK_IMAGES)

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU stand-in"
    best = max(stage, key=lambda cfg: stage[cfg][0])
    rows = "".join(
        f"| {w} × {f:.2f} | {r:.1f} | {r / bare:.2f} | {r / limit:.2f} | {b:.1f} | {u:.0f} % |\n"
        for (w, f), (r, b, u) in stage.items()
    )
    return (
        f"### One GPU: the pipeline against the model's own rate ({gpu}, "
        f"{os.cpu_count()} CPU cores)\n\n"
        f"A {UNET_C}-channel U-Net (TorchScript, fp16, 512² input, batches of up to 16) on "
        "640×480 studio shots (JPEG). **The limit** is the model alone: fp16 batches of 16 "
        "already on the card, back to back. **One bare process** is `matte_folder` (decode, "
        "inference, PNG encode, one image after another). **The matting stage** is N workers "
        "at GPU_MEMORY_FRACTION f behind the matting balancer, fed 48 requests at a time "
        f"({N_GPU_IMAGES} images). **The whole pipeline** is `mattepipe.stack` on one "
        f"uploaded zip of {stack['n']} images: upload, ingest, matting, comparison sheets and "
        "metrics, the task database, to the job's end. GPU use is NVML's utilisation sampled "
        "every 0.1 s over the timed part.\n\n"
        f"The model's limit on this card: **{limit:.0f} images/s**; one bare process "
        f"{bare:.1f} images/s.\n\n"
        "| matting workers × GPU_MEMORY_FRACTION | images/s | ÷ bare process | ÷ limit "
        "| mean batch | GPU use |\n|---|---:|---:|---:|---:|---:|\n"
        f"{rows}\n"
        f"The whole pipeline ({stack['workers']} matting workers × {stack['fraction']:.2f}, "
        f"{stack['comparison']} comparison workers): **{stack['rate']:.1f} images/s** "
        f"({stack['completed']:.0f} of {stack['n']} in {stack['seconds']:.1f} s), "
        f"**{stack['rate'] / limit:.2f} of the model's limit**, "
        f"{stack['rate'] / stage[best][0]:.2f} of the best matting-stage row "
        f"({best[0]} × {best[1]:.2f}); GPU use {stack['util']:.0f} % on average, busy in "
        f"{100 * stack['busy']:.0f} % of the samples.\n"
        f"{_profile_text(stack['profile'])}"
    )


def _profile_text(profile: dict[str, Any]) -> str:
    """The whole stack's py-spy summary: per service, its own-time leaders."""
    if not profile:
        return ""
    rows = "".join(
        f"| {name} | {p['samples']} | "
        + "; ".join(f"{fn} {share:.0f} %" for fn, share in p["top"]) + " |\n"
        for name, p in profile.items())
    return (
        f"\nWhere the whole pipeline's processes spent their time (py-spy, {GPU_PROFILE_S:.0f} s "
        f"from {GPU_PROFILE_DELAY_S:.0f} s into the job, 50 Hz, every thread py-spy saw busy; "
        "each function's share of its process's samples, own time):\n\n"
        "| service | samples | top functions |\n|---|---:|---|\n" + rows
    )


STEP_BATCH = 16
STEP_ROUNDS = 9


def _steps_section() -> str:
    """The steps around a learned model for one batch (`LearnedEngine._each`: resize to 512²
    and normalise 16 640×480 images, grow 16 mattes back): one after another, as a CPU
    runtime does them, against on the worker's threads, as on a GPU (`step_threads`);
    alternated, medians. A tiny U-Net: only the steps are timed, not the model."""
    from matting_worker.engines.learned import LearnedEngine
    from matting_worker.engines.registry import create_engine
    from shared.imaging import decode_rgb

    threads = max(2, os.cpu_count() or 2)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        models = base / "models"
        build_unet(models, 2, 512, STEP_BATCH, _env())
        engine = create_engine("bench_unet", models)
        assert isinstance(engine, LearnedEngine)
        engine.load()
        images = [decode_rgb(p) for p in _studio_images(base / "images", STEP_BATCH)]
    raw = [np.random.default_rng(i).random((512, 512), dtype=np.float32)
           for i in range(STEP_BATCH)]

    def batch() -> None:
        engine._each(engine.preprocess, [(im, (512, 512)) for im in images])
        engine._each(engine.postprocess, [(r, 480, 640) for r in raw])

    pool = ThreadPoolExecutor(threads)
    times: dict[str, list[float]] = {"one": [], "pool": []}
    for _ in range(STEP_ROUNDS):
        for key, steps in (("one", None), ("pool", pool)):
            engine._steps = steps
            t0 = time.perf_counter()
            batch()
            times[key].append(time.perf_counter() - t0)
    engine._steps = None
    pool.shutdown()
    one, many = (median(times[k]) * 1000 for k in ("one", "pool"))
    return (
        f"### The steps around a learned model: one thread against {threads} "
        f"(this machine: {os.cpu_count()} cores)\n\n"
        f"A batch of {STEP_BATCH} 640×480 images resized to 512² and normalised, and "
        f"{STEP_BATCH} 512² mattes grown back (`LearnedEngine._each`), median of "
        f"{STEP_ROUNDS} alternated rounds. On a GPU the worker does them on its threads "
        "(`step_threads`); one after another, the card waited for them.\n\n"
        "| steps | ms per batch | ratio |\n|---|---:|---:|\n"
        f"| one after another (before; CPU runtimes still) | {one:.1f} | 1.00 |\n"
        f"| on {threads} threads (as a GPU worker) | {many:.1f} | {one / many:.2f} |\n"
    )


def run() -> str:
    parts = ["## Pipeline throughput\n"]
    if os.environ.get("BENCH_SKIP_CPU") != "1":
        parts.append(_cpu_section())
    parts.append(_steps_section())
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    if cuda:
        parts.append(_gpu_section())
    else:
        parts.append("_No CUDA device here: the shared-GPU run is in bench/gpu.md, "
                     "from the last machine that had one._\n")
    return "\n".join(parts)


if __name__ == "__main__":
    print(run())
