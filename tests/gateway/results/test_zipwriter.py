"""The streaming zip writer against Python's zipfile (and Info-ZIP's `unzip -t` where it is
installed): every member read back with its name, bytes and CRC; ZIP64 past 65 535 members
and past 4 GiB; the length announced in advance byte-exact; memory that does not grow with
the member count; a member that is not the size announced breaks the zip loudly."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import time
import tracemalloc
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path

import pytest

from gateway.db.tables import Task
from gateway.results.zip_stream import build_zip, zip_chunks
from gateway.results.zipwriter import (
    CENTRAL_IN_MEMORY_BYTES,
    ZipSizeMismatch,
    ZipSizer,
    ZipWriter,
)
from shared.storage import Storage

_ZIP64_LIMIT = 0xFFFFFFFF


def _write(members: Iterable[tuple[str, list[bytes], float]]) -> tuple[bytes, int]:
    """The zip of `members` (name, pieces, mtime) and the length `ZipSizer` announced."""
    writer, sizer = ZipWriter(), ZipSizer()
    out: list[bytes] = []
    for name, pieces, mtime in members:
        size = sum(len(p) for p in pieces)
        sizer.add(name, size)
        out += writer.member(name, size, pieces, mtime)
    out += writer.finish()
    return b"".join(out), sizer.size


def test_members_read_back_with_names_bytes_and_crcs() -> None:
    when = time.mktime((2024, 5, 17, 13, 45, 20, 0, 0, -1))
    members = [
        ("matting_output/a.png", [b"\x89PNG", b"\x00" * 1000, b"end"], when),
        ("final_results/ünïcödé/日本_compare.jpg", [b"jpeg bytes"], when),
        ("empty.txt", [], when),
        ("report.json", [b'{"items": []}'], when),
    ]
    body, announced = _write(members)
    assert len(body) == announced
    zf = zipfile.ZipFile(io.BytesIO(body))
    assert zf.testzip() is None
    assert zf.namelist() == [m[0] for m in members]
    for (name, pieces, _), info in zip(members, zf.infolist(), strict=True):
        data = b"".join(pieces)
        assert zf.read(name) == data
        assert zlib.crc32(data) == info.CRC
        assert info.file_size == info.compress_size == len(data)
        assert info.compress_type == zipfile.ZIP_STORED
        assert info.date_time == (2024, 5, 17, 13, 45, 20)


def test_more_than_65535_members_get_zip64_end_records(tmp_path: Path) -> None:
    count = 70_000
    body, announced = _write((f"d{i // 1000:03d}/{i}.png", [b"x" * (i % 3)], 0.0)
                             for i in range(count))
    assert len(body) == announced
    assert b"PK\x06\x06" in body[-200:]  # the ZIP64 end record
    zf = zipfile.ZipFile(io.BytesIO(body))
    infos = zf.infolist()
    assert len(infos) == count
    assert infos[-1].filename == f"d069/{count - 1}.png"
    assert zf.read("d012/12345.png") == b"x" * (12345 % 3)
    assert zf.testzip() is None
    if shutil.which("unzip") is not None:  # Info-ZIP as well, where installed
        path = tmp_path / "many.zip"
        path.write_bytes(body)
        done = subprocess.run(["unzip", "-tqq", str(path)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


def test_unzip_accepts_the_zip() -> None:
    """Info-ZIP's `unzip -t` (the tool users reach for) on a zip with UTF-8 names."""
    if shutil.which("unzip") is None:
        pytest.skip("unzip not installed (zipfile checks the same zips above)")
    body, _ = _write([("matting_output/ü.png", [b"a" * 5000], time.time()),
                      ("report.csv", [b"path\n"], time.time())])
    done = subprocess.run(["unzip", "-t", "/dev/stdin"], input=body, capture_output=True)
    if done.returncode != 0:  # some unzip builds cannot read a pipe: a file then
        import tempfile

        with tempfile.NamedTemporaryFile(suffix=".zip") as f:
            f.write(body)
            f.flush()
            done = subprocess.run(["unzip", "-t", f.name], capture_output=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert b"No errors detected" in done.stdout


def test_a_member_past_4_gib_gets_zip64_sizes_and_offsets(tmp_path: Path) -> None:
    """A 4 GiB + 1 byte member of zeros (written sparse), then a small one whose offset
    needs ZIP64 in the central directory."""
    block = bytes(1024 * 1024)
    big = _ZIP64_LIMIT + 1
    pieces = [block] * (big // len(block)) + [bytes(big % len(block))]
    writer, sizer = ZipWriter(), ZipSizer()
    path = tmp_path / "big.zip"
    with open(path, "wb") as f:
        for name, data, size in (("video.mp4", pieces, big), ("after.txt", [b"after"], 5)):
            sizer.add(name, size)
            for piece in writer.member(name, size, data):
                if piece is block:
                    f.seek(len(block), os.SEEK_CUR)  # sparse: the zeros cost no disk
                else:
                    f.write(piece)
        for piece in writer.finish():
            f.write(piece)
        f.truncate()
    assert path.stat().st_size == sizer.size
    with zipfile.ZipFile(path) as zf:
        video, after = zf.infolist()
        assert video.file_size == big and after.header_offset > _ZIP64_LIMIT
        assert zf.read("after.txt") == b"after"
        with zf.open("video.mp4") as member:  # the CRC is checked at its end
            while member.read(64 * 1024 * 1024):
                pass


def test_a_member_not_the_size_announced_breaks_the_zip() -> None:
    writer = ZipWriter()
    with pytest.raises(ZipSizeMismatch):
        list(writer.member("short.png", 10, [b"12345"]))
    with pytest.raises(ZipSizeMismatch):
        list(writer.member("long.png", 3, [b"12345"]))
    writer.close()


def test_memory_does_not_grow_with_the_member_count() -> None:
    """200 000 members (a 100 000-image job's zip): the central directory spills to a
    temporary file, so what is held stays about CENTRAL_IN_MEMORY_BYTES."""
    writer = ZipWriter()
    tracemalloc.start()
    try:
        for i in range(200_000):
            for _ in writer.member(f"matting_output/folder{i // 1000:04d}/image{i:06d}.png", 0,
                                   []):
                pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    ends = b"".join(writer.finish())
    assert writer.count == 200_000 and ends.endswith(b"\x00\x00")
    assert peak < CENTRAL_IN_MEMORY_BYTES + 4 * 1024 * 1024  # not 200 000 records (~20 MB)


def _job(st: Storage, n: int) -> list[Task]:
    tasks = []
    for i in range(n):
        path = f"d/img{i}.png"
        st.objects.put(st.matting_rel("j", path), b"cut " + path.encode())
        st.objects.put(st.compare_rel("j", path), b"sheet " + path.encode())
        tasks.append(Task(job_id="j", path=path, state="completed"))
    return tasks


def test_a_file_changed_after_sizing_ends_the_download_with_an_error(tmp_path: Path) -> None:
    """A sized zip cannot lie about its length: a file that grew between the sizing and
    the sending stops the stream (the client sees a cut download, not a wrong zip)."""
    st = Storage(tmp_path)
    tasks = _job(st, 3)
    jz = build_zip(st, "j", "rgba", tasks)
    (st.root / st.matting_rel("j", "d/img1.png")).write_bytes(b"a different, longer file")
    with pytest.raises(ZipSizeMismatch):
        b"".join(zip_chunks(jz))


def test_a_file_gone_after_sizing_ends_the_download_with_an_error(tmp_path: Path) -> None:
    st = Storage(tmp_path)
    tasks = _job(st, 3)
    jz = build_zip(st, "j", "rgba", tasks)
    (st.root / st.compare_rel("j", "d/img2.png")).unlink()
    with pytest.raises(FileNotFoundError):
        b"".join(zip_chunks(jz))
    assert jz.cleanup is not None and not jz.cleanup.exists()  # the temporary report went


def test_a_name_two_rows_share_goes_in_once_on_both_walks(tmp_path: Path) -> None:
    """Rows made before ingest made output names unique: `d/a.png` and `d/a.jpg` share the
    name `matting_output/d/a.png`. The first walk leaves the second out and the sending (which
    holds no names) leaves out the same one: one member, and the length announced."""
    st = Storage(tmp_path)
    tasks = _job(st, 2)
    tasks.insert(1, Task(job_id="j", path="d/img0.jpg", state="completed"))
    jz = build_zip(st, "j", "rgba", tasks)
    body = b"".join(zip_chunks(jz))
    assert len(body) == jz.size
    names = zipfile.ZipFile(io.BytesIO(body)).namelist()
    assert names.count("matting_output/d/img0.png") == 1
    assert names.count("final_results/d/img0_compare.jpg") == 1
    assert len(names) == len(set(names)) == jz.members


def test_a_member_written_whole_is_the_same_bytes_as_in_pieces() -> None:
    """`ZipWriter.whole` (a small file read in one go: one piece per member) writes what
    `member` does, central directory included, past the records gathered before a spool."""
    members = [(f"d/{i:05d}.png", bytes([i % 251]) * (i % 300), 1.6e9 + i) for i in range(1500)]
    whole, pieces = ZipWriter(), ZipWriter()
    a = [whole.whole(name, len(data), data, mtime) for name, data, mtime in members]
    b = [b"".join(pieces.member(name, len(data), [data[:7], data[7:]], mtime))
         for name, data, mtime in members]
    assert a == b
    body = b"".join(a) + b"".join(whole.finish())
    assert body == b"".join(b) + b"".join(pieces.finish())
    zf = zipfile.ZipFile(io.BytesIO(body))
    assert zf.testzip() is None and len(zf.namelist()) == 1500
    assert zf.read("d/00299.png") == bytes([299 % 251]) * 299
    with pytest.raises(ZipSizeMismatch):
        ZipWriter().whole("short.png", 10, b"123")


def test_members_counted_from_their_sums_are_counted_as_one_by_one() -> None:
    """`ZipSizer.add_many` (a finished job's recorded sizes) announces what `add` would,
    and refuses (counting nothing) members that would end past 4 GiB."""
    members = [(f"matting_output/d{i % 3}/é{i}.png", i * 37 % 1000) for i in range(70_000)]
    one, many = ZipSizer(), ZipSizer()
    for name, size in members:
        one.add(name, size)
    assert many.add_many(len(members), sum(s for _, s in members),
                         sum(len(n.encode()) for n, _ in members))
    many.add("report.json", 10)
    one.add("report.json", 10)
    assert (many.size, many.count) == (one.size, one.count)
    big = ZipSizer()
    assert not big.add_many(2, _ZIP64_LIMIT, 10)
    assert (big.offset, big.count, big.central) == (0, 0, 0)
