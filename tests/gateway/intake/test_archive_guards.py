"""Archives built to cost the gateway memory or disk: header bombs, directory bombs, many small
bombs, and archives that would fill DATA_DIR. Each is a real file; memory is measured with
tracemalloc around the extraction."""

from __future__ import annotations

import gzip
import io
import shutil
import tarfile
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from gateway.intake.archive import ArchiveLimits, ArchiveRejected, iter_members
from gateway.intake.archive_headers import TAR_HEADER_MAX_BYTES

LIMITS = ArchiveLimits(
    max_members=100_000, max_total_size=10**12, max_ratio=200.0, max_image_pixels=10**8
)
MEMORY_BOUND = 8 << 20
"""Peak Python allocations we allow while refusing an archive (the old code needed ~2x the
header or directory size: 128 MiB and more here)."""


def peak_while(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


def consume(upload: Path, dest: Path, limits: ArchiveLimits = LIMITS) -> None:
    list(iter_members(upload, dest, limits, upload.name))


def header_bomb(path: Path, kind: bytes, size: int) -> Path:
    """A .tar.gz whose first member is an extension header of `size` bytes, written through a
    streaming gzip writer (never whole in memory): ~65 KB on disk for 64 MiB."""
    block = b"n" * (1 << 20)
    with gzip.open(path, "wb", compresslevel=9) as gz:
        ti = tarfile.TarInfo("././@LongLink")
        ti.type, ti.size = kind, size
        gz.write(ti.tobuf(tarfile.GNU_FORMAT))
        left = size
        while left:
            n = min(left, len(block))
            gz.write(block[:n])
            left -= n
        gz.write(b"\0" * (-size % tarfile.BLOCKSIZE))
        img = tarfile.TarInfo("x.png")
        gz.write(img.tobuf(tarfile.GNU_FORMAT))
        gz.write(b"\0" * 2 * tarfile.BLOCKSIZE)
    return path


@pytest.mark.parametrize(
    ("kind", "label"),
    [(tarfile.GNUTYPE_LONGNAME, "GNU long-name"), (tarfile.GNUTYPE_LONGLINK, "GNU long-link"),
     (tarfile.XHDTYPE, "pax"), (tarfile.XGLTYPE, "pax")],
)  # fmt: skip
def test_tar_header_bomb_is_refused_in_flat_memory(
    tmp_path: Path, kind: bytes, label: str
) -> None:
    upload = header_bomb(tmp_path / "bomb.tar.gz", kind, 64 << 20)
    assert upload.stat().st_size < 200_000
    errors: list[ArchiveRejected] = []

    def run() -> None:
        try:
            consume(upload, tmp_path / "d")
        except ArchiveRejected as exc:
            errors.append(exc)

    peak = peak_while(run)
    assert len(errors) == 1
    assert f"tar {label} header of 67108864 bytes" in errors[0].reason
    assert str(TAR_HEADER_MAX_BYTES) in errors[0].reason
    assert peak < MEMORY_BOUND, peak


def test_long_names_under_the_header_limit_still_work(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (6, 4), (1, 2, 3)).save(buf, "PNG")
    name = "d" * 200 + "/" + "e" * 200 + ".png"  # needs a GNU long-name header
    upload = tmp_path / "ok.tar.gz"
    with tarfile.open(upload, "w:gz", format=tarfile.GNU_FORMAT) as tf:
        ti = tarfile.TarInfo(name)
        ti.size = len(buf.getvalue())
        tf.addfile(ti, io.BytesIO(buf.getvalue()))
    got = list(iter_members(upload, tmp_path / "d", LIMITS, upload.name))
    assert [(m.path, m.error) for m in got] == [(name, None)]


def test_tar_extension_chain_is_bounded(tmp_path: Path) -> None:
    upload = tmp_path / "chain.tar"
    with upload.open("wb") as f:
        for _ in range(50):
            ti = tarfile.TarInfo("././@LongLink")
            ti.type, ti.size = tarfile.GNUTYPE_LONGNAME, 1024
            f.write(ti.tobuf(tarfile.GNU_FORMAT) + b"z" * 1024)
        f.write(b"\0" * 1024)
    with pytest.raises(ArchiveRejected, match="extension headers in a row"):
        consume(upload, tmp_path / "d")


def black_bmp() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (580, 580)).save(buf, "BMP")  # ~1 MiB of zeros: each under RATIO_FLOOR
    return buf.getvalue()


def small_bombs(path: Path, kind: str, count: int = 200) -> Path:
    data = black_bmp()
    assert len(data) <= 1 << 20
    if kind == "zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
            for i in range(count):
                zf.writestr(f"b/{i}.bmp", data)
    else:
        with tarfile.open(path, "w:gz", compresslevel=9) as tf:
            for i in range(count):
                ti = tarfile.TarInfo(f"b/{i}.bmp")
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    return path


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_many_small_bombs_are_refused_by_the_aggregate_ratio(tmp_path: Path, kind: str) -> None:
    upload = small_bombs(tmp_path / f"bmps.{kind}", kind)
    assert upload.stat().st_size < 400_000  # ~200 MB of images in a few hundred KB
    dest = tmp_path / "d"
    with pytest.raises(ArchiveRejected, match="200 times its own size") as info:
        consume(upload, dest)
    assert "MAX_COMPRESSION_RATIO" in info.value.reason
    written = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    assert written <= 200 * upload.stat().st_size  # stopped at the budget, not at 200 MB


def test_aggregate_ratio_leaves_ordinary_archives_alone(tmp_path: Path) -> None:
    upload = small_bombs(tmp_path / "few.zip", "zip", count=1)  # 1 MiB: under the floor
    got = list(iter_members(upload, tmp_path / "d", LIMITS, upload.name))
    assert [m.error for m in got] == [None]


def test_effective_size_budget() -> None:
    limits = ArchiveLimits(10, max_total_size=10**9, max_ratio=200.0, max_image_pixels=1)
    assert limits.total_budget(1000) == 1 << 20  # the floor
    assert limits.total_budget(100_000) == 20_000_000
    assert limits.total_budget(10**8) == 10**9  # MAX_UNCOMPRESSED_SIZE caps it


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_unpacking_stops_before_min_free_disk(tmp_path: Path, kind: str) -> None:
    data = black_bmp()[:4096]
    upload = tmp_path / f"u.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(upload, "w") as zf:
            zf.writestr("a.bmp", data)
    else:
        with tarfile.open(upload, "w:gz") as tf:
            ti = tarfile.TarInfo("a.bmp")
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    free = shutil.disk_usage(tmp_path).free
    limits = ArchiveLimits(10, 10**12, 200.0, 10**8, min_free_disk=free)
    with pytest.raises(ArchiveRejected, match="not enough free disk space"):
        consume(upload, tmp_path / "d", limits)
    assert not any(p.is_file() for p in (tmp_path / "d").rglob("*"))


def many_names_zip(path: Path, count: int, name_len: int) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for i in range(count):
            zf.writestr(f"{i:08d}" + "n" * name_len + ".png", b"")
    return path


def test_zip_member_count_is_checked_before_the_directory_is_read(tmp_path: Path) -> None:
    upload = many_names_zip(tmp_path / "names.zip", 20_000, 900)  # a ~37 MB directory
    small = ArchiveLimits(1000, 10**12, 200.0, 10**8)
    tracemalloc.start()
    with pytest.raises(ArchiveRejected, match="more than 1000 members"):
        consume(upload, tmp_path / "d", small)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < MEMORY_BOUND, peak


def test_zip_lying_end_record_is_caught_by_counting(tmp_path: Path) -> None:
    upload = many_names_zip(tmp_path / "liar.zip", 3000, 10)
    raw = bytearray(upload.read_bytes())
    eocd = raw.rfind(b"PK\x05\x06")
    raw[eocd + 8 : eocd + 12] = (500).to_bytes(2, "little") * 2  # claims 500 entries
    upload.write_bytes(bytes(raw))
    small = ArchiveLimits(1000, 10**12, 200.0, 10**8)
    with pytest.raises(ArchiveRejected, match="more than 1000 members"):
        consume(upload, tmp_path / "d", small)


def test_zip_padded_directory_is_refused(tmp_path: Path) -> None:
    upload = tmp_path / "fat.zip"
    with zipfile.ZipFile(upload, "w") as zf:
        info = zipfile.ZipInfo("a.png")
        info.comment = b"c" * 60_000  # per-entry comments make the directory fat
        zf.writestr(info, b"")
        info2 = zipfile.ZipInfo("b.png")
        info2.comment = b"c" * 60_000
        zf.writestr(info2, b"")
    with pytest.raises(ArchiveRejected, match=r"central directory of .* too large"):
        consume(upload, tmp_path / "d")
