"""Hostile input through the real HTTP API of the real stack (every service its own process).

Each bad input is answered with a 4xx and a JSON `detail`, or becomes a rejected item (or a
failed job) with a reason, while the good images of the same upload complete and a good job
running alongside is untouched. Nothing lands outside DATA_DIR, no link is ever created, and
the workers and balancers refuse paths that leave DATA_DIR. The archive reader itself (every
name and limit, and the hypothesis property test) is covered in tests/gateway/test_archive.py;
this module checks that the whole pipeline keeps those promises end to end.
"""

from __future__ import annotations

import io
import json
import os
import stat
import struct
import tarfile
import time
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mattepipe.stack import health_urls, wait_healthy
from tests.support.images import make_zip, photo_bytes, studio_shot
from tests.support.stack import Stack, running_stack
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

KEY = "hostile-test-key"
MAX_UPLOAD = 3 << 20
MAX_UNPACKED = 24 << 20
FINAL = ("completed", "completed_with_errors", "failed", "cancelled")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data = tmp_path_factory.mktemp("hostile") / "data"
    data.mkdir()
    with running_stack(
        data, api_key=KEY, max_upload_size=MAX_UPLOAD, max_uncompressed_size=MAX_UNPACKED,
        max_concurrent_jobs=32, matting_workers=1,
    ) as s:  # fmt: skip
        yield s


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=stack.url, timeout=60, headers={"Authorization": f"Bearer {KEY}"}
    ) as c:
        yield c


@pytest.fixture(scope="module")
def alongside(api: httpx.Client) -> str:
    """A good job started before the hostile ones; the last test checks it came through."""
    members = {f"good/{n}": photo_bytes(n, 160) for n in ("coffee.jpg", "rocket.jpg")}
    members["good/disc.png"] = studio_shot()[0]
    r = api.post("/upload", content=make_zip(members), headers={"Content-Type": "application/zip"})
    assert r.status_code == 202, r.text
    return str(r.json()["job_id"])


# --- helpers --------------------------------------------------------------------------------


def upload(api: httpx.Client, body: bytes, ctype: str, **params: str) -> dict[str, Any]:
    params.setdefault("model", "identity")
    r = api.post("/upload", content=body, headers={"Content-Type": ctype}, params=params)
    assert r.status_code == 202, r.text
    return dict(r.json())


def wait_final(api: httpx.Client, job_id: str, timeout: float = 240.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        st = api.get(f"/status/{job_id}").json()
        if st["state"] in FINAL:
            return dict(st)
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} not finished in {timeout}s: {st}")
        time.sleep(0.3)


def tasks(api: httpx.Client, job_id: str, state: str | None = None) -> dict[str, dict[str, Any]]:
    params = {"limit": "1000", **({"state": state} if state else {})}
    r = api.get(f"/jobs/{job_id}/tasks", params=params)
    assert r.status_code == 200, r.text
    return {t["path"]: t for t in r.json()["tasks"]}


def assert_4xx(r: httpx.Response, status: int, needle: str = "") -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    detail = r.json()["detail"]
    assert detail, r.text
    assert needle.lower() in json.dumps(detail).lower(), detail


def png(w: int = 24, h: int = 16, seed: int = 0) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (w, h), (seed * 40 % 256, 90, 200)).save(buf, "PNG")
    return buf.getvalue()


def truncated_jpeg() -> bytes:
    """A real photo's JPEG cut at 60 %: the header reads, the pixels do not."""
    full = photo_bytes("coffee.jpg", 120)
    return full[: len(full) * 6 // 10]


def pixel_bomb() -> bytes:
    """A 69-byte PNG whose header claims 40000 × 40000 pixels (1.6 G, 1.6 GB decoded)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", 40000, 40000, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))  # fmt: skip


def zip_with(members: list[tuple[str | zipfile.ZipInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name" is the point
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in members:
                zf.writestr(name, data)
    return buf.getvalue()


def cp437_name(zip_bytes: bytes, placeholder: bytes, raw: bytes) -> bytes:
    """Swap a plain ASCII member name for raw non-UTF-8 bytes (no UTF-8 flag: cp437)."""
    assert len(placeholder) == len(raw) and zip_bytes.count(placeholder) == 2
    return zip_bytes.replace(placeholder, raw)


def tar_with(entries: list[tuple[str, bytes, bytes, str]], mode: str = "w:gz") -> bytes:
    """(name, data, type, linkname); GNU format with latin-1 names, so bytes stay raw."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=tarfile.GNU_FORMAT,
                      encoding="latin-1") as tf:  # fmt: skip
        for name, data, kind, link in entries:
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname = kind, link
            ti.size = len(data) if kind == tarfile.REGTYPE else 0
            tf.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return buf.getvalue()


def no_escape(stack: Stack) -> None:
    """Nothing was written beside DATA_DIR, and no link exists anywhere inside it."""
    outside = {p.name for p in stack.data_dir.parent.iterdir()}
    assert outside == {"data"}, outside
    links = [p for p in stack.data_dir.rglob("*") if p.is_symlink()]
    assert not links, links


# --- archives with hostile members: each rejected with a reason, the rest completes ----------


def test_zip_with_every_kind_of_bad_member(stack: Stack, api: httpx.Client,
                                           alongside: str) -> None:  # fmt: skip
    link = zipfile.ZipInfo("link.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    good = {"ok/a.png": png(seed=1), "ok/deep/b.jpg": photo_bytes("chelsea.jpg", 96)}
    bad: list[tuple[str | zipfile.ZipInfo, bytes]] = [
        ("../escape.png", png(seed=2)),
        ("ok/../../../escape2.png", png(seed=3)),
        ("/abs.png", png(seed=4)),
        ("C:/windows.png", png(seed=5)),
        (link, b"/etc/passwd"),
        ("bomb.png", b"\0" * (3 << 20)),  # 3 MiB of zeros in ~3 KB
        ("pixels.png", pixel_bomb()),
        ("cut.jpg", truncated_jpeg()),
        ("empty.png", b""),
        ("notes.png", b"just some text, not an image"),
        ("inner.zip", make_zip({"x.png": png()})),
        ("disguised.png", make_zip({"y.png": png()})),
        ("ok/a.png", png(seed=9)),  # duplicate of a good name: the first one wins
        ("x" * 300 + ".png", png(seed=6)),
        ("deep/" * 210 + "z.png", png(seed=7)),
        ("ctl\x01.png", png(seed=8)),
    ]
    body = zip_with([*good.items(), ("cafXX.png", png(seed=10)), *bad])
    body = cp437_name(body, b"cafXX.png", b"caf\x82\xe9.png")
    job = upload(api, body, "application/zip")
    st = wait_final(api, job["job_id"])
    assert st["state"] == "completed_with_errors", st
    cafe = b"caf\x82\xe9.png".decode("cp437")
    assert st["completed"] == 3 and st["failed"] == 0

    done = tasks(api, job["job_id"], "completed")
    assert set(done) == {"ok/a.png", "ok/deep/b.jpg", cafe}
    rejected = tasks(api, job["job_id"], "rejected")
    expect = {
        "escape.png": "'..'", "escape2.png": "'..'", "abs.png": "absolute",
        "windows.png": "absolute", "link.png": "link", "bomb.png": "compression ratio",
        "pixels.png": "too large: 40000x40000", "cut.jpg": "truncated", "empty.png": "",
        "notes.png": "not a recognised image", "inner.zip": "nested", "disguised.png": "nested",
        "ok/a.png": "duplicate", "x" * 300 + ".png": "too long", "deep/deep/": "too long",
        "ctl": "control characters",
    }  # fmt: skip
    assert len(rejected) == len(bad)
    for key, reason in expect.items():
        hits = [t for p, t in rejected.items() if key in p]
        assert hits, (key, list(rejected))
        for t in hits:
            assert t["error"] and reason.lower() in t["error"].lower(), (key, t["error"])
    assert st["rejected"] == len(rejected)
    no_escape(stack)

    # The report in the download says the same, item by item.
    dl = api.get(job["download_url"])
    assert dl.status_code == 200, (dl.status_code, dl.text[:2000])
    zf = zipfile.ZipFile(io.BytesIO(dl.content))
    report = json.loads(zf.read("report.json"))
    assert report["summary"]["completed"] == 3
    assert report["summary"]["rejected"] == len(rejected)
    assert all(i["error"] for i in report["items"] if i["state"] == "rejected")
    assert f"matting_output/{cafe[:-4]}.png" in zf.namelist()


def test_tar_links_specials_names_and_nesting(stack: Stack, api: httpx.Client,
                                              alongside: str) -> None:  # fmt: skip
    reg, sym, lnk = tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
    entries = [
        ("good/one.png", png(seed=1), reg, ""),
        ("good/caf\xe9.png", png(seed=2), reg, ""),  # latin-1 bytes, not UTF-8
        ("../up.png", png(seed=3), reg, ""),
        ("/etc/abs.png", png(seed=4), reg, ""),
        ("sym.png", b"", sym, "/etc/passwd"),
        ("symrel.png", b"", sym, "../../../../etc/passwd"),
        ("hard.png", b"", lnk, "good/one.png"),
        ("fifo.png", b"", tarfile.FIFOTYPE, ""),
        ("dev.png", b"", tarfile.CHRTYPE, ""),
        ("inner.tar.gz", tar_with([("x.png", png(), reg, "")]), reg, ""),
        ("good/one.png", png(seed=5), reg, ""),
        ("n" * 256 + ".png", png(seed=6), reg, ""),
        ("pixels.png", pixel_bomb(), reg, ""),
    ]
    job = upload(api, tar_with(entries), "application/gzip")
    st = wait_final(api, job["job_id"])
    assert st["state"] == "completed_with_errors", st
    cafe = "good/" + b"caf\xe9.png".decode("cp437")
    assert set(tasks(api, job["job_id"], "completed")) == {"good/one.png", cafe}
    rejected = tasks(api, job["job_id"], "rejected")
    expect = {
        "up.png": "'..'", "abs.png": "absolute", "sym.png": "links", "symrel.png": "links",
        "hard.png": "links", "fifo.png": "special", "dev.png": "special",
        "inner.tar.gz": "nested", "good/one.png": "duplicate", "n" * 40: "too long",
        "pixels.png": "too large",
    }  # fmt: skip
    for key, reason in expect.items():
        hits = [t for p, t in rejected.items() if key in p]
        assert len(hits) == 1, (key, list(rejected))
        assert reason in (hits[0]["error"] or "").lower(), (key, hits)
    assert st["rejected"] == len(rejected) == len(entries) - 2
    no_escape(stack)


# --- whole uploads refused: a 4xx at once, or a failed job that says why ----------------------


def test_archives_refused_whole(stack: Stack, api: httpx.Client, alongside: str) -> None:
    zero = b"\0" * (8 << 20)
    cases: list[tuple[str, bytes, str, dict[str, str], str]] = [
        ("not an archive", b"hello, I am a text file" * 40, "application/zip", {},
         "not an archive"),
        ("empty zip", zip_with([]), "application/zip", {}, "no images"),
        ("only junk", zip_with([("__MACOSX/._a.png", b"x"), (".DS_Store", b"x")]),
         "application/zip", {}, "no images"),
        ("empty tar", tar_with([], mode="w"), "application/x-tar", {}, "no images"),
        ("zip bomb, total", zip_with([(f"z{i}.png", zero) for i in range(4)]),
         "application/zip", {}, "unpacks to more than"),
        ("tar bomb, total", tar_with([("big.png", zero * 4, tarfile.REGTYPE, "")]),
         "application/gzip", {}, "unpacks to more than"),
        ("truncated zip", make_zip({"a.png": png(), "b.png": png(seed=2)})[:-30],
         "application/zip", {}, "corrupt"),
        ("garbage tar.gz", b"\x1f\x8b\x08\x00" + os.urandom(2000), "application/gzip", {},
         "corrupt"),
    ]  # fmt: skip
    jobs = {name: upload(api, body, ct, **q)["job_id"] for name, body, ct, q, _ in cases}
    for name, _, _, _, reason in cases:
        st = wait_final(api, jobs[name])
        assert st["state"] in ("failed", "completed_with_errors"), (name, st)
        assert st["completed"] == 0, (name, st)
        assert reason in (st["error"] or "").lower(), (name, st["error"])
        # Its files go: the upload and whatever was extracted before the refusal (the job
        # shows `failed` first; the files are removed just after).
        folder = stack.data_dir / "input" / jobs[name]
        wait_for(lambda d=folder: not list(d.rglob("*.*")), what=f"{name}: files removed")
    no_escape(stack)


def test_single_images_pixel_bomb_and_corrupt(api: httpx.Client, alongside: str) -> None:
    for body, ctype, reason in [
        (pixel_bomb(), "image/png", "too large"),
        (truncated_jpeg(), "image/jpeg", "truncated"),
        (b"\x89PNG\r\n\x1a\nnot really", "image/png", "image"),
    ]:
        job = upload(api, body, ctype)
        st = wait_final(api, job["job_id"])
        assert st["state"] == "completed_with_errors" and st["rejected"] == 1, st
        (item,) = tasks(api, job["job_id"]).values()
        assert item["state"] == "rejected" and reason in item["error"].lower(), item


def test_filename_with_a_path_is_only_a_name(stack: Stack, api: httpx.Client) -> None:
    job = upload(api, png(), "application/octet-stream", filename="../../../etc/evil.png")
    assert wait_final(api, job["job_id"])["state"] == "completed"
    assert list(tasks(api, job["job_id"])) == ["evil.png"]
    no_escape(stack)


def test_upload_request_errors_are_4xx_with_detail(stack: Stack, api: httpx.Client) -> None:
    before = api.get("/jobs").json()["total"]
    ok = {"Content-Type": "application/zip"}
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"content": b"abc", "headers": {"Content-Type": "text/plain"}}, 415, "content type"),
        ({"content": b"abc", "headers": {"Content-Type": "application/json"}}, 415,
         "content type"),
        ({"content": b"", "headers": ok}, 400, "empty upload"),
        ({"content": b"abc", "headers": {"Content-Type": "application/octet-stream"}}, 400,
         "filename"),
        ({"content": b"abc", "headers": {"Content-Type": "application/octet-stream"},
          "params": {"filename": "notes.txt"}}, 400, "unsupported file type"),
        ({"files": {"other": ("a.zip", b"abc")}}, 400, "no 'file' field"),
        ({"files": {"file": ("a.rar", b"abc")}}, 400, "unsupported file type"),
        ({"content": b"abc", "headers": {"Content-Type": "multipart/form-data"}}, 400,
         "boundary"),
        ({"content": b"--b\r\nContent-Disposition: form-data; name=\"file\"; "
                     b"filename=\"a.zip\"\r\n\r\nabc",
          "headers": {"Content-Type": "multipart/form-data; boundary=b"}}, 400, "incomplete"),
        ({"content": b"x", "headers": ok, "params": {"output": "bogus"}}, 400, "unknown output"),
        ({"content": b"x", "headers": ok, "params": {"model": "nope"}}, 400, "unknown model"),
        ({"content": b"x", "headers": ok, "params": {"model": "identity,nope"}}, 400,
         "unknown model"),
        ({"content": b"x", "headers": ok, "params": {"model": "../../etc/passwd"}}, 400,
         "unknown model"),
        ({"content": b"x", "headers": ok, "params": {"callback_url": "file:///etc/passwd"}},
         400, "callback_url"),
    ]  # fmt: skip
    for kwargs, status, needle in cases:
        assert_4xx(api.post("/upload", **kwargs), status, needle)
    # None of them became a job or left a file behind.
    assert api.get("/jobs").json()["total"] == before
    assert not list((stack.data_dir / "input").rglob("upload.*"))


def test_413_while_streaming_removes_the_partial_file(stack: Stack, api: httpx.Client) -> None:
    before = api.get("/jobs").json()["total"]
    try:  # with a Content-Length over the limit, the answer comes before the body is read
        r = api.post("/upload", content=b"x" * (MAX_UPLOAD + 1),
                     headers={"Content-Type": "application/zip"})  # fmt: skip
        assert_4xx(r, 413, "limit")
    except httpx.TransportError:
        pass

    def body() -> Iterator[bytes]:  # no Content-Length: the limit can only bite mid-stream
        for _ in range(MAX_UPLOAD // (256 << 10) + 8):
            yield b"\1" * (256 << 10)

    try:
        r = api.post("/upload", content=body(), headers={"Content-Type": "application/zip"})
        assert_4xx(r, 413, "limit")
    except httpx.TransportError:
        pass  # the gateway may close before the client finished sending; the disk is what counts
    assert api.get("/jobs").json()["total"] == before
    assert not list((stack.data_dir / "input").rglob("upload.*"))
    assert api.get("/health").json()["status"] == "ok"


def test_malformed_query_values_and_ids(api: httpx.Client, alongside: str) -> None:
    for path, params, status, needle in [
        ("/jobs", {"limit": "-1"}, 422, "limit"),
        ("/jobs", {"limit": "abc"}, 422, "limit"),
        ("/jobs", {"limit": "100000"}, 422, "limit"),
        ("/jobs", {"offset": "-5"}, 422, "offset"),
        (f"/jobs/{alongside}/tasks", {"state": "bogus"}, 400, "unknown task state"),
        (f"/jobs/{alongside}/tasks", {"state": "'; DROP TABLE tasks; --"}, 400, "state"),
        (f"/jobs/{alongside}/tasks", {"limit": "0"}, 422, "limit"),
        (f"/download/{alongside}", {"partial": "maybe"}, 422, "partial"),
        ("/status/" + "x" * 5000, {}, 404, "unknown job"),
        ("/status/..%2F..%2Fetc%2Fpasswd", {}, 404, ""),
        ("/download/%00", {}, 404, ""),
        ("/jobs/nope/tasks", {"state": "pending"}, 404, "unknown job"),
    ]:
        assert_4xx(api.get(path, params=params), status, needle)
    assert_4xx(api.delete("/jobs/" + "y" * 300), 404, "unknown job")
    assert api.get("/jobs", params={"limit": "1"}).status_code == 200


def test_malformed_json_to_post_jobs(api: httpx.Client) -> None:
    """`POST /jobs {"upload_id": …}` finishes a resumable upload (when the tus routes exist)."""
    probe = api.post("/jobs", content=b"{", headers={"Content-Type": "application/json"})
    if probe.status_code in (404, 405):
        pytest.skip("this gateway has no POST /jobs (resumable uploads) yet")
    for body, ctype in [
        (b"{", "application/json"),
        (b"[]", "application/json"),
        (b'{"upload_id": 5}', "application/json"),
        (b'{"upload_id": "../../etc/passwd"}', "application/json"),
        (b'{"upload_id": "nope", "output": "bogus"}', "application/json"),
        (b"upload_id=x", "application/x-www-form-urlencoded"),
    ]:
        r = api.post("/jobs", content=body, headers={"Content-Type": ctype})
        assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
        assert r.json()["detail"], r.text


def test_every_endpoint_but_health_needs_the_key(stack: Stack, alongside: str) -> None:
    with httpx.Client(base_url=stack.url, timeout=30) as anon:
        assert anon.get("/health").status_code == 200
        for method, path in [
            ("GET", "/jobs"), ("GET", f"/status/{alongside}"), ("GET", f"/download/{alongside}"),
            ("GET", f"/jobs/{alongside}/tasks"), ("DELETE", f"/jobs/{alongside}"),
            ("POST", "/upload"), ("GET", "/models"), ("GET", "/metrics"),
        ]:  # fmt: skip
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
                r = anon.request(method, path, headers=headers)
                assert_4xx(r, 401, "api key")
                assert r.headers["www-authenticate"] == "Bearer"


# --- workers and balancers refuse paths outside DATA_DIR ------------------------------------


def test_stage_services_refuse_paths_outside_data_dir(stack: Stack) -> None:
    s = stack.settings
    img = stack.data_dir / "input" / "probe" / "ok.png"
    img.parent.mkdir(parents=True)
    img.write_bytes(png())
    (img.parent / "escape.png").symlink_to("/etc/passwd")
    good_in, good_out = "input/probe/ok.png", "matting_output/probe/ok.png"
    targets = [
        (f"http://127.0.0.1:{s.matting_worker_port}", "/matting"),
        (f"http://127.0.0.1:{s.matting_api_port}", "/matting"),
        (f"http://127.0.0.1:{s.comparison_worker_port}", "/compare"),
        (f"http://127.0.0.1:{s.comparison_api_port}", "/compare"),
    ]
    bad_paths = [
        ("../../etc/passwd", good_out), ("/etc/passwd", good_out),
        (str(img), good_out), ("input/probe/escape.png", good_out),
        ("input/../../x.png", good_out), ("input/probe\\..\\..\\x.png", good_out),
        ("input/probe/ok.png\x00.jpg", good_out),
        (good_in, "../../../tmp/evil.png"), (good_in, "/tmp/evil.png"),
    ]  # fmt: skip
    try:
        with httpx.Client(timeout=60, headers=stack.internal_headers) as c:
            for base, route in targets:
                for src, out in bad_paths:
                    params: dict[str, Any] = {"models": ["identity"]}
                    if route == "/compare":
                        params = {"mattes": [{"model": "identity", "path": good_in}]}
                    body = {"task_id": 1, "job_id": "probe", "input": src, "output": out,
                            "params": params}  # fmt: skip
                    r = c.post(base + route, json=body)
                    assert r.status_code == 400, (base, route, src, out, r.text)
                    err = r.json()
                    assert err["retryable"] is False and err["detail"], err
                # A compare whose matte or ground truth leaves DATA_DIR is refused the same way.
                if route == "/compare":
                    for bad in ({"mattes": [{"model": "identity", "path": "/etc/passwd"}]},
                                {"mattes": [{"model": "identity", "path": good_in}],
                                 "gt": "/etc/passwd"}):
                        body = {"task_id": 1, "job_id": "probe", "input": good_in,
                                "output": "final_results/probe/x.jpg", "params": bad}
                        r = c.post(base + route, json=body)
                        assert r.status_code == 400 and r.json()["retryable"] is False, r.text
                # Malformed bodies: a 4xx, never a crash or a retryable 5xx.
                for raw in (b"{", b"[]", b'{"task_id": "x"}'):
                    r = c.post(base + route, content=raw,
                               headers={"Content-Type": "application/json"})  # fmt: skip
                    assert 400 <= r.status_code < 500, (base, raw, r.text)
                    assert r.json()["detail"], r.text
            # The balancers' heartbeat endpoint takes only an http(s) worker URL.
            for base in (targets[1][0], targets[3][0]):
                for hb in ({"url": "file:///etc/passwd", "worker_id": "x"}, {"worker_id": "x"}):
                    r = c.post(base + "/workers/heartbeat", json=hb)
                    assert 400 <= r.status_code < 500 and r.json()["detail"], r.text
                assert c.get(base + "/workers").json()  # the real workers are still listed
                assert all(w["url"].startswith("http://127.0.0.1:")
                           for w in c.get(base + "/workers").json())  # fmt: skip
        assert not Path("/tmp/evil.png").exists()
        assert not (stack.data_dir.parent / "x.png").exists()
    finally:
        (img.parent / "escape.png").unlink()
    # Every stage service is still up.
    wait_healthy(health_urls(s), timeout=30)


def test_the_internal_plane_wants_its_token_and_its_own_folders(stack: Stack) -> None:
    """Balancers and workers answer nobody without INTERNAL_TOKEN; with it, a stage still
    writes only its own outputs of the job it was given (the database stays a database)."""
    s = stack.settings
    db = stack.data_dir / "mattepipe.db"
    db_before = db.read_bytes()[:100]
    img = stack.data_dir / "input" / "plane" / "ok.png"
    img.parent.mkdir(parents=True, exist_ok=True)
    img.write_bytes(png())
    balancers = [f"http://127.0.0.1:{p}" for p in (s.matting_api_port, s.comparison_api_port)]
    workers = [f"http://127.0.0.1:{p}" for p in (s.matting_worker_port, s.comparison_worker_port)]
    compare = {"task_id": 1, "job_id": "plane", "input": "input/plane/ok.png",
               "output": "mattepipe.db",
               "params": {"mattes": [{"model": "identity", "path": "matting_output/plane/ok.png"}]}}
    matting = {"task_id": 1, "job_id": "plane", "input": "input/plane/ok.png",
               "output": "matting_output/plane/forged.png", "params": {"models": ["identity"]}}
    hb = {"url": "http://127.0.0.1:9", "worker_id": "matting-worker-1", "capacity": 10**6}
    with httpx.Client(timeout=60) as c:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            for base, route, body in ((balancers[0], "/matting", matting),
                                      (workers[0], "/matting", matting),
                                      (balancers[1], "/compare", compare),
                                      (workers[1], "/compare", compare),
                                      (balancers[0], "/workers/heartbeat", hb),
                                      (balancers[1], "/workers/heartbeat", hb)):
                r = c.post(base + route, json=body, headers=headers)
                assert r.status_code == 401, (base, route, r.text)
            for base in balancers + workers:
                for path in ("/info", "/metrics", "/workers"):
                    if path == "/workers" and base in workers:
                        continue
                    assert c.get(base + path, headers=headers).status_code == 401, base + path
        assert not (stack.data_dir / "matting_output/plane/forged.png").exists()
        listed = c.get(balancers[0] + "/workers", headers=stack.internal_headers).json()
        assert all(w["url"] != "http://127.0.0.1:9" for w in listed)
        # With the token: refused all the same, for the path.
        for target in ("mattepipe.db", "final_results/plane/x.html",
                       "final_results/other/ok_compare.jpg"):
            for base in (balancers[1], workers[1]):
                r = c.post(base + "/compare", json={**compare, "output": target},
                           headers=stack.internal_headers)
                assert r.status_code == 400 and r.json()["retryable"] is False, r.text
        # A forged heartbeat under a static worker's id, from elsewhere: refused.
        r = c.post(balancers[0] + "/workers/heartbeat", json=hb, headers=stack.internal_headers)
        assert r.status_code == 409, r.text
    assert db.read_bytes()[:100] == db_before
    assert not (stack.data_dir / "final_results/plane/x.html").exists()
    wait_healthy(health_urls(s), timeout=30)


def test_the_good_job_alongside_was_unaffected(api: httpx.Client, alongside: str) -> None:
    st = wait_final(api, alongside)
    assert st["state"] == "completed", st
    assert st["completed"] == 3 and st["rejected"] == 0 and st["failed"] == 0
    zf = zipfile.ZipFile(io.BytesIO(api.get(f"/download/{alongside}").content))
    names = set(zf.namelist())
    for stem in ("good/coffee", "good/rocket", "good/disc"):
        assert f"matting_output/{stem}.png" in names
        assert f"final_results/{stem}_compare.jpg" in names
