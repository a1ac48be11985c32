import contextlib
import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from gateway.intake.archive import (
    ArchiveCorrupt,
    ArchiveLimits,
    ArchiveRejected,
    Member,
    clean_name,
    detect_kind,
    gt_key,
    iter_members,
    match_gt,
)
from shared.settings import Settings

pytestmark = pytest.mark.filterwarnings("ignore:Duplicate name")

LIMITS = ArchiveLimits(
    max_members=1000, max_total_size=10**9, max_ratio=200.0, max_image_pixels=10**8
)


def png(seed: int = 0, size: tuple[int, int] = (8, 6)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (seed % 256, (seed // 256) % 256, 7)).save(buf, "PNG")
    return buf.getvalue()


def jpeg(seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), (seed % 256, 40, 90)).save(buf, "JPEG")
    return buf.getvalue()


def make_zip(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def tar_add(
    tf: tarfile.TarFile,
    name: str,
    data: bytes = b"",
    kind: bytes = tarfile.REGTYPE,
    linkname: str = "",
) -> None:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.linkname = linkname
    ti.size = len(data) if kind == tarfile.REGTYPE else 0
    tf.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def make_tar(path: Path, members: list[tuple[str, bytes]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for name, data in members:
            tar_add(tf, name, data)
    return path


def run(upload: Path, dest: Path, limits: ArchiveLimits = LIMITS) -> dict[str, Member]:
    out: dict[str, Member] = {}
    for m in iter_members(upload, dest, limits, upload.name):
        out.setdefault(m.path, m)
    return out


def test_detect_kind() -> None:
    assert detect_kind("x.zip", b"PK\x03\x04rest") == "zip"
    assert detect_kind("x.zip", b"PK\x05\x06" + b"\0" * 18) == "zip"
    assert detect_kind("x.tgz", b"\x1f\x8b\x08\x00") == "tar"
    assert detect_kind("x", b"\0" * 257 + b"ustar\x0000") == "tar"
    assert detect_kind("a.png", png()[:64]) == "image"
    assert detect_kind("a.jpg", jpeg()[:64]) == "image"
    with pytest.raises(ArchiveRejected, match="not an archive or image"):
        detect_kind("notes.zip", b"hello, this is text")


def test_settings_limits() -> None:
    lim = ArchiveLimits.from_settings(Settings(max_archive_members=7, max_image_pixels=99))
    assert lim.max_members == 7 and lim.max_image_pixels == 99


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a/./b//c.png", "a/b/c.png"),
        ("./x.jpg", "x.jpg"),
        ("a\\b.png", "a/b.png"),
        ("__MACOSX/._x.jpg", None),
        ("p/.DS_Store", None),
        ("p/._x.jpg", None),
        ("Thumbs.db", None),
    ],
)
def test_clean_name_normalises_or_skips(raw: str, expected: str | None) -> None:
    assert clean_name(raw) == expected


def test_zip_tree_with_every_kind_of_bad_member(tmp_path: Path) -> None:
    bomb = b"\0" * (8 << 20)
    upload = make_zip(
        tmp_path / "u.zip",
        [
            ("photos/a/b/x.jpg", jpeg(1)),
            ("photos/y.png", png(2)),
            ("photos/y.png", png(3)),
            ("../escape.png", png(4)),
            ("/etc/abs.png", png(5)),
            ("C:\\win.png", png(6)),
            ("photos/notes.txt", b"not an image"),
            ("photos/broken.jpg", jpeg(7)[:40]),
            ("photos/inner.zip", b"PK\x03\x04whatever"),
            ("photos/sneaky.bin", make_zip(tmp_path / "in.zip", [("q.png", png())]).read_bytes()),
            ("photos/bomb.png", bomb),
            ("photos/" + "n" * 300 + ".png", png(8)),
            ("__MACOSX/photos/._x.jpg", b"junk"),
            ("photos/.DS_Store", b"junk"),
            ("gt/a/b/x.png", png(9)),
            ("photos/", b""),
        ],
    )
    dest = tmp_path / "dest"
    got = run(upload, dest)
    assert got["photos/a/b/x.jpg"].stored == dest / "photos/a/b/x.jpg"
    assert (dest / "photos/a/b/x.jpg").read_bytes() == jpeg(1)
    assert (dest / "photos/y.png").read_bytes() == png(2)  # the first of the duplicates wins
    dupes = [
        m
        for m in iter_members(upload, tmp_path / "d2", LIMITS, "u.zip")
        if m.path == "photos/y.png"
    ]
    assert [m.error for m in dupes] == [None, "duplicate name"]
    assert "'..'" in (got["../escape.png"].error or "")
    assert "absolute" in (got["/etc/abs.png"].error or "")
    assert "absolute" in (got["C:\\win.png"].error or "")
    assert got["photos/notes.txt"].error == "not a recognised image file"
    assert got["photos/broken.jpg"].error
    assert got["photos/inner.zip"].error == "nested archives are not supported"
    assert got["photos/sneaky.bin"].error == "nested archives are not supported"
    assert got["photos/bomb.png"].error == "compression ratio too high (zip bomb?)"
    assert got["photos/" + "n" * 300 + ".png"].error == "name too long"
    assert got["gt/a/b/x.png"].is_gt and got["gt/a/b/x.png"].stored is not None
    assert not any("MACOSX" in p or "DS_Store" in p for p in got)
    for m in got.values():
        assert (m.stored is None) == (m.error is not None)
    on_disk = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    assert on_disk == {"photos/a/b/x.jpg", "photos/y.png", "gt/a/b/x.png"}


def test_pixel_bomb_member_is_rejected(tmp_path: Path) -> None:
    upload = make_zip(tmp_path / "u.zip", [("big.png", png(1, (400, 300)))])
    got = run(upload, tmp_path / "d", ArchiveLimits(10, 10**9, 200.0, max_image_pixels=1000))
    assert "too large" in (got["big.png"].error or "")
    assert not (tmp_path / "d/big.png").exists()


def test_zip_symlink_is_rejected(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "l.zip", "w") as zf:
        info = zipfile.ZipInfo("link.png")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    assert run(tmp_path / "l.zip", tmp_path / "d")["link.png"].error == "links are not supported"


@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_tar_links_devices_and_tree(tmp_path: Path, mode: str) -> None:
    upload = tmp_path / "u.tar"
    with tarfile.open(upload, mode) as tf:
        tar_add(tf, "./set/a/x.png", png(1))
        tar_add(tf, "set/sym.png", kind=tarfile.SYMTYPE, linkname="/etc/passwd")
        tar_add(tf, "set/hard.png", kind=tarfile.LNKTYPE, linkname="set/a/x.png")
        tar_add(tf, "set/dev", kind=tarfile.CHRTYPE)
        tar_add(tf, "set/fifo", kind=tarfile.FIFOTYPE)
        tar_add(tf, "set/dir", kind=tarfile.DIRTYPE)
        tar_add(tf, "set/b/y.jpg", jpeg(2))
    got = run(upload, tmp_path / "d")
    assert set(got) == {
        "set/a/x.png",
        "set/sym.png",
        "set/hard.png",
        "set/dev",
        "set/fifo",
        "set/b/y.jpg",
    }
    assert (tmp_path / "d/set/a/x.png").read_bytes() == png(1)
    assert got["set/b/y.jpg"].stored == tmp_path / "d/set/b/y.jpg"
    assert got["set/sym.png"].error == got["set/hard.png"].error == "links are not supported"
    assert "special files" in (got["set/dev"].error or "")
    assert "special files" in (got["set/fifo"].error or "")
    assert not (tmp_path / "d/set/sym.png").exists()


def test_non_utf8_tar_name_becomes_a_valid_str(tmp_path: Path) -> None:
    upload = tmp_path / "u.tar"
    with tarfile.open(upload, "w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tf:
        tar_add(tf, "café.png", png(1))
    (member,) = list(iter_members(upload, tmp_path / "d", LIMITS, "u.tar"))
    assert member.error is None and member.stored is not None
    member.path.encode("utf-8")  # no surrogates left
    assert member.stored.read_bytes() == png(1)


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.9, -20, -12])
def test_truncated_targz_yields_the_good_part_then_raises(tmp_path: Path, cut: float) -> None:
    good = tmp_path / "g.tar.gz"
    make_tar(good, [(f"p/{i}.png", png(i, (60, 60))) for i in range(20)])
    data = good.read_bytes()
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(data[: int(len(data) * cut) if cut > 0 else int(cut)])
    seen: list[Member] = []
    with pytest.raises(ArchiveCorrupt, match="corrupt archive"):
        for m in iter_members(bad, tmp_path / "d", LIMITS, "bad.tar.gz"):
            seen.append(m)
    for m in seen:
        assert m.stored is not None and m.stored.read_bytes() == png(int(m.path[2:-4]), (60, 60))
    leftovers = [p for p in (tmp_path / "d").rglob("*") if p.is_file()]
    assert sorted(leftovers) == sorted(m.stored for m in seen if m.stored)


def test_truncated_zip_is_rejected(tmp_path: Path) -> None:
    good = make_zip(tmp_path / "g.zip", [("a.png", png())])
    bad = tmp_path / "bad.zip"
    bad.write_bytes(good.read_bytes()[:-30])
    with pytest.raises(ArchiveCorrupt, match="corrupt archive"):
        list(iter_members(bad, tmp_path / "d", LIMITS, "bad.zip"))


def test_member_and_size_limits(tmp_path: Path) -> None:
    members = [(f"{i}.png", png(i)) for i in range(5)]
    small = ArchiveLimits(
        max_members=3, max_total_size=10**9, max_ratio=200, max_image_pixels=10**8
    )
    for upload in (make_zip(tmp_path / "u.zip", members), make_tar(tmp_path / "u.tgz", members)):
        with pytest.raises(ArchiveRejected, match="more than 3 members"):
            list(iter_members(upload, tmp_path / "d", small, upload.name))
        tiny = ArchiveLimits(
            max_members=99, max_total_size=len(png()) * 2, max_ratio=200, max_image_pixels=10**8
        )
        with pytest.raises(ArchiveRejected, match="unpacks to more than"):
            list(iter_members(upload, tmp_path / "d2", tiny, upload.name))


def test_empty_archives_yield_nothing(tmp_path: Path) -> None:
    assert run(make_zip(tmp_path / "e.zip", []), tmp_path / "d") == {}
    assert run(make_tar(tmp_path / "e.tar", [], mode="w"), tmp_path / "d") == {}
    assert run(make_zip(tmp_path / "j.zip", [("__MACOSX/._a", b"x")]), tmp_path / "d") == {}


def test_single_image_and_not_an_archive(tmp_path: Path) -> None:
    upload = tmp_path / "upload.jpg"
    upload.write_bytes(jpeg(3))
    (m,) = list(iter_members(upload, tmp_path / "d", LIMITS, "My Photo.jpg"))
    assert m.path == "My Photo.jpg" and m.stored is not None
    assert m.stored.read_bytes() == jpeg(3)
    junk = tmp_path / "upload.zip"
    junk.write_bytes(b"just some text, not a zip")
    with pytest.raises(ArchiveRejected, match="not an archive or image"):
        list(iter_members(junk, tmp_path / "d2", LIMITS, "x.zip"))


def test_gt_key_and_matching() -> None:
    assert gt_key("gt/a/b/x.png") == "a/b/x"
    assert gt_key("gt/x.png") == "x"
    images = [
        "photos/a/b/x.jpg",
        "top.jpg",
        "photos/solo.jpg",
        "p/q/r/deep.jpg",
        "one/twin.jpg",
        "two/sub/twin.jpg",
        "nomatte.jpg",
    ]
    gts = [
        "gt/a/b/x.png",
        "gt/top.png",
        "gt/top.jpg",
        "gt/solo.png",
        "gt/deep.png",
        "gt/twin.png",
        "gt/orphan.png",
    ]
    got = match_gt(images, gts)
    assert got["photos/a/b/x.jpg"] == "gt/a/b/x.png"
    assert got["top.jpg"] == "gt/top.png"  # png preferred over jpg
    assert got["photos/solo.jpg"] == "gt/solo.png"
    assert got["p/q/r/deep.jpg"] == "gt/deep.png"  # weak, but only one image claims it
    assert got["one/twin.jpg"] == "gt/twin.png"  # strong: same path below the first folder
    assert "two/sub/twin.jpg" not in got  # weak claim on a key already strongly taken
    assert "nomatte.jpg" not in got
    assert match_gt(["a/x.jpg", "b/c/x.jpg"], ["gt/zz/x.png"]) == {}


# --- property: whatever the names and sizes, nothing escapes dest --------------------------

NAMES = st.one_of(
    st.sampled_from(
        [
            "a.png",
            "../a.png",
            "/abs.png",
            "a/../../b.png",
            "./a.png",
            "a\\..\\b.png",
            "C:/x.png",
            "é/ü.png",
            "x" * 300,
            "a/" * 600 + "z.png",
            "a.png/b.png",
            "gt/a.png",
            "__MACOSX/a.png",
            ".hidden",
            "a/b/c.png",
            "nul\x00.png",
        ]
    ),
    st.text(alphabet=st.sampled_from(list("ab./\\:é日 \x01")), min_size=1, max_size=30),
)
ENTRIES = st.lists(
    st.tuples(NAMES, st.sampled_from(["png", "jpeg", "junk", "big"])), min_size=0, max_size=8
)


def _content(kind: str, i: int) -> bytes:
    if kind == "png":
        return png(i + 1)
    if kind == "jpeg":
        return jpeg(i + 1) + bytes([i])
    if kind == "big":
        return bytes([i]) * 50_000
    return f"junk {i}".encode()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(entries=ENTRIES, fmt=st.sampled_from(["zip", "tar", "tar.gz"]))
def test_property_nothing_escapes_dest(
    tmp_path_factory: pytest.TempPathFactory, entries: list[tuple[str, str]], fmt: str
) -> None:
    root = tmp_path_factory.mktemp("prop")
    work = root / "work"
    work.mkdir()
    upload = work / f"u.{fmt}"
    contents = {}
    if fmt == "zip":
        with zipfile.ZipFile(upload, "w", zipfile.ZIP_DEFLATED) as zf:
            for i, (name, kind) in enumerate(entries):
                contents[i] = _content(kind, i)
                zf.writestr(name, contents[i])
    else:
        with tarfile.open(upload, "w:gz" if fmt == "tar.gz" else "w") as tf:
            for i, (name, kind) in enumerate(entries):
                contents[i] = _content(kind, i)
                tar_add(tf, name, contents[i])
    dest = root / "dest"
    members: list[Member] = []
    with contextlib.suppress(ArchiveRejected):
        for m in iter_members(upload, dest, LIMITS, upload.name):
            members.append(m)
    assert len(members) <= len(entries)
    all_files = {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}
    assert all_files - {upload} == {p for p in dest.rglob("*") if p.is_file()}
    stored = set()
    for m in members:
        assert (m.stored is None) != (m.error is None), m
        if m.stored is not None:
            assert m.stored == dest / m.path
            assert m.stored.resolve().is_relative_to(dest.resolve())
            assert ".." not in m.path.split("/") and not m.path.startswith("/")
            assert m.stored.read_bytes() in contents.values()
            stored.add(m.stored)
    assert stored == {p for p in dest.rglob("*") if p.is_file()}
    event(f"stored {min(len(stored), 2)}+, rejected {min(len(members) - len(stored), 2)}+")
