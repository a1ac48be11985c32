"""Where intake's files land (`gateway.intake.landing`), on the local DATA_DIR and on a real S3
server (SeaweedFS): publishing a batch, reading an upload in place, removing a job."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from gateway.intake.archive import ArchiveLimits, FileSource, iter_members
from gateway.intake.landing import (
    ObjectSource,
    drop_inputs,
    is_remote,
    publish,
    scratch,
    upload_source,
)
from shared.storage import Storage
from tests.support.images import png_set

LIMITS = ArchiveLimits(max_members=100, max_total_size=1 << 30, max_ratio=200,
                       max_image_pixels=10**8, members_leave=True)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_local_store_is_not_remote_and_publish_leaves_files(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "data")
    f = write(storage.root / "input/j/chunks/a.png", b"a")
    assert not is_remote(storage) and scratch(storage) is storage
    publish(storage, [f])
    assert f.read_bytes() == b"a"
    assert isinstance(upload_source(storage, "input/j/chunks/a.png"), FileSource)
    assert upload_source(storage, "input/j/missing.zip") is None


def test_publish_uploads_a_batch_and_empties_the_scratch(s3_storage: Storage) -> None:
    assert is_remote(s3_storage) and scratch(s3_storage).is_local
    files = {f"input/j/chunks/d{i % 4}/{i}.png": bytes([i]) * (i + 1) for i in range(40)}
    paths = [write(s3_storage.root / rel, data) for rel, data in files.items()]
    publish(s3_storage, paths)
    assert dict(s3_storage.objects.list("input/j/")) == {k: len(v) for k, v in files.items()}
    assert all(s3_storage.objects.get(k) == v for k, v in files.items())
    assert not any(p.exists() for p in paths)


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_an_archive_object_is_read_in_place(s3_storage: Storage, tmp_path: Path,
                                             kind: str) -> None:
    members = png_set(5)
    buf = io.BytesIO()
    if kind == "zip":
        with zipfile.ZipFile(buf, "w") as zf:
            for name, data in members.items():
                zf.writestr(name, data)
    else:
        with tarfile.open(fileobj=buf, mode="w:gz") as tf:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    key = f"input/j/upload.{kind}"
    s3_storage.objects.put(key, buf.getvalue())
    source = upload_source(s3_storage, key)
    assert isinstance(source, ObjectSource) and source.size == len(buf.getvalue())
    dest = tmp_path / "chunks"
    got = {m.path: m.stored.read_bytes() for m in iter_members(source, dest, LIMITS, key)
           if m.stored is not None}
    assert got == members
    assert not (s3_storage.root / key).exists()  # nothing was downloaded


def test_remove_job_takes_every_area_and_no_other_job(s3_storage: Storage) -> None:
    keys = [f"{area}/j1/x.png" for area in ("input", "matting_output", "final_results",
                                             "reports")]
    for k in [*keys, "input/j10/x.png", "reports/j10/report.json"]:
        s3_storage.objects.put(k, b"x")
    write(s3_storage.root / "input/j1/upload.zip", b"spool")
    s3_storage.remove_job("j1")  # (shared.storage: what job deletion calls)
    assert [k for k, _ in s3_storage.objects.list("")] == ["input/j10/x.png",
                                                           "reports/j10/report.json"]
    assert not (s3_storage.root / "input/j1").exists()


def test_drop_inputs_of_one_part(s3_storage: Storage) -> None:
    for k in ("input/j/chunks/a.png", "input/j/videos.jsonl", "input/j/upload.zip"):
        s3_storage.objects.put(k, b"x")
    drop_inputs(s3_storage, "j", sub="chunks")
    drop_inputs(s3_storage, "j", sub="videos.jsonl")
    assert [k for k, _ in s3_storage.objects.list("input/j/")] == ["input/j/upload.zip"]
