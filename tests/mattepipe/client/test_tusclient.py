"""The tus client and the resumable upload against a stand-in tus server over real HTTP:
checksummed chunks, recovery from faults, resumption from the server's offset, the state
file's life, and the plain-upload fallback."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from mattepipe.client.gateway import GatewayClient
from mattepipe.client.packing import open_source
from mattepipe.client.resume import StateStore, state_key
from mattepipe.client.tus import SourceChanged, TusClient, TusError, UploadStopped, encode_metadata
from mattepipe.client.upload import JobOptions, UploadEvents, upload_source
from tests.support.standin import StandIn, serve


def tree(root: Path, n: int = 5, size: int = 9000) -> dict[str, bytes]:
    files = {f"set/{i % 2}/img{i}.jpg": os.urandom(size + i) for i in range(n)}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def uploaded(st: StandIn) -> bytes:
    (up,) = st.uploads.values()
    return bytes(up["data"])


def test_chunks_are_checksummed_and_faults_are_retried(tmp_path: Path) -> None:
    data = os.urandom(50_000)
    with serve(StandIn(faults=["500", "half", "checksum"])) as st, \
            GatewayClient(st.url) as gc:
        tus = TusClient(gc._http, chunk=8000, sleep=lambda s: None)
        url = tus.create(len(data), {"filename": "x.bin"})
        assert tus.offset(url) == 0
        seen: list[int] = []
        sent = tus.upload(url, lambda off: iter([data[off:]]), 0, len(data), seen.append)
        assert uploaded(st) == data
        assert tus.offset(url) == len(data)
    assert sent == len(data)
    assert seen == sorted(seen) and seen[-1] == len(data)
    # 7 chunks, 3 faulty sends; "half" stored 4000 bytes, the resend starts after them
    assert len(st.patches) == 7 + 3
    assert (4000, 4000) in st.patches


def test_a_refusal_is_not_retried(tmp_path: Path) -> None:
    with serve(StandIn()) as st, GatewayClient(st.url) as gc:
        tus = TusClient(gc._http, chunk=10, sleep=lambda s: None)
        url = tus.create(5, {"filename": "x"})
        with pytest.raises(TusError, match="beyond Upload-Length"):
            tus.upload(url, lambda off: iter([b"0123456789"]), 0, 10)
        assert tus.offset(st.url + "/files/nope") is None


def test_an_unreachable_server_gives_up_after_its_retries() -> None:
    with GatewayClient("http://127.0.0.1:9") as gc:
        tus = TusClient(gc._http, retries=2, sleep=lambda s: None)
        with pytest.raises(TusError, match="failed 3 times"):
            tus.upload("http://127.0.0.1:9/files/x", lambda off: iter([b"abc"]), 0, 3)


def test_metadata_is_base64() -> None:
    assert encode_metadata({"filename": "ü.zip", "a": ""}) == "filename w7wuemlw,a "


def test_an_interrupted_folder_upload_resumes_where_it_stopped(tmp_path: Path) -> None:
    files = tree(tmp_path / "photos")
    store = StateStore(tmp_path / "state")
    src = open_source(tmp_path / "photos")
    opts = JobOptions(model="classical", output="both")
    with serve(StandIn()) as st, GatewayClient(st.url) as gc:
        with pytest.raises(UploadStopped) as stop:
            upload_source(gc, src, opts, store, chunk=8192, stop_after=16384)
        (state,) = store.all()
        assert state.tus_url and state.job_id is None
        assert stop.value.offset == 16384 == len(uploaded(st))

        notes: list[str] = []
        started: list[tuple[int, int, bool]] = []
        events = UploadEvents(started=lambda *a: started.append(a), note=notes.append)
        again = upload_source(gc, open_source(tmp_path / "photos"), opts, store, events,
                              chunk=8192)
        assert again.resumed_from == 16384
        assert again.sent == src.size - 16384
        assert started == [(src.size, 16384, True)]
        assert any("resuming" in n for n in notes)
        assert uploaded(st) == b"".join(src.read_from(0))
        (job,) = st.jobs.values()
        (tmp_path / "up.zip").write_bytes(job["data"])
        with zipfile.ZipFile(tmp_path / "up.zip") as zf:
            assert {n: zf.read(n) for n in zf.namelist()} == files
        assert job["model"] == "classical" and job["output"] == "both"
        saved = store.load(again.key)
        assert saved is not None and saved.job_id == again.job.job_id

        # a third start finds the job and sends nothing
        third = upload_source(gc, open_source(tmp_path / "photos"), opts, store)
        assert third.existing_job and third.job.job_id == again.job.job_id
        assert len(st.uploads) == 1


def test_other_arguments_or_a_changed_folder_start_a_new_upload(tmp_path: Path) -> None:
    tree(tmp_path / "p")
    store = StateStore(tmp_path / "state")
    with serve(StandIn()) as st, GatewayClient(st.url) as gc:
        for opts in (JobOptions(), JobOptions(output="alpha")):
            with pytest.raises(UploadStopped):
                upload_source(gc, open_source(tmp_path / "p"), opts, store, chunk=4096,
                              stop_after=4096)
        (tmp_path / "p" / "new.jpg").write_bytes(b"new")
        out = upload_source(gc, open_source(tmp_path / "p"), JobOptions(), store, chunk=4096)
        assert out.resumed_from == 0
        assert len(st.uploads) == 3
        assert len(store.all()) == 3


def test_a_forgotten_upload_starts_again(tmp_path: Path) -> None:
    tree(tmp_path / "p")
    store = StateStore(tmp_path / "state")
    with serve(StandIn()) as st, GatewayClient(st.url) as gc:
        with pytest.raises(UploadStopped):
            upload_source(gc, open_source(tmp_path / "p"), JobOptions(), store, chunk=4096,
                          stop_after=4096)
        st.uploads.clear()  # the server lost it (expired, restarted without its files)
        notes: list[str] = []
        out = upload_source(gc, open_source(tmp_path / "p"), JobOptions(), store,
                            UploadEvents(note=notes.append), chunk=4096)
        assert out.resumed_from == 0 and out.sent == out.total
        assert any("no longer holds" in n for n in notes)


def test_without_tus_it_sends_one_plain_upload(tmp_path: Path) -> None:
    files = tree(tmp_path / "p", n=2)
    store = StateStore(tmp_path / "state")
    src = open_source(tmp_path / "p")
    with serve(StandIn(tus=False)) as st, GatewayClient(st.url) as gc:
        out = upload_source(gc, src, JobOptions(), store)
        assert not out.resumable and out.sent == src.size
        (body,) = st.plain_bodies
        assert body == b"".join(src.read_from(0))
        (tmp_path / "b.zip").write_bytes(body)
        with zipfile.ZipFile(tmp_path / "b.zip") as zf:
            assert sorted(zf.namelist()) == sorted(files)
        key = state_key(src.path, src.fingerprint, st.url, None, "rgba")
        assert store.load(key) is not None  # the job id, so a rerun follows the job


def test_a_source_that_shrinks_is_reported_as_changed(tmp_path: Path) -> None:
    with serve(StandIn()) as st, GatewayClient(st.url) as gc:
        tus = TusClient(gc._http, chunk=4, sleep=lambda s: None)
        url = tus.create(10, {"filename": "x"})
        with pytest.raises(SourceChanged, match="ended at byte 8 of 10"):
            tus.upload(url, lambda off: iter([b"01234567"[off:]]), 0, 10)
