"""The folder zip stream: deterministic, sized upfront, readable from any offset, a real zip
whose members are the files byte for byte; and the fingerprint that guards a resume."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest

from mattepipe.client.packing import folder_members, open_source, skip_bytes
from mattepipe.client.tus import rechunk


def make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "b/z.jpg": os.urandom(70_000),
        "a.png": os.urandom(1234),
        "b/c/deep name ü.jpg": os.urandom(5),
        "gt/a.png": os.urandom(300),
        "empty.txt": b"",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / ".DS_Store").write_bytes(b"junk")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_bytes(b"ref")
    return files


def test_two_builds_are_byte_identical_and_sized_upfront(tmp_path: Path) -> None:
    files = make_tree(tmp_path)
    one, two = open_source(tmp_path), open_source(tmp_path)
    a, b = b"".join(one.read_from(0)), b"".join(two.read_from(0))
    assert a == b
    assert len(a) == one.size == two.size
    assert one.fingerprint == two.fingerprint
    assert one.name == f"{tmp_path.name}.zip" and one.content_type == "application/zip"
    with zipfile.ZipFile(io.BytesIO(a)) as zf:
        assert zf.testzip() is None
        assert zf.namelist() == sorted(files)  # hidden files and folders left out
        for rel, data in files.items():
            assert zf.read(rel) == data
            assert zf.getinfo(rel).compress_type == zipfile.ZIP_STORED


def test_reading_from_any_offset_is_the_tail_of_the_whole(tmp_path: Path) -> None:
    make_tree(tmp_path)
    src = open_source(tmp_path)
    whole = b"".join(src.read_from(0))
    for offset in (0, 1, 29, 30, 100, 1234 + 30, 40_000, src.size - 22, src.size - 1, src.size):
        assert b"".join(src.read_from(offset)) == whole[offset:], offset
    with pytest.raises(ValueError, match="outside"):
        src.read_from(src.size + 1)


def test_fingerprint_follows_content_changes(tmp_path: Path) -> None:
    make_tree(tmp_path)
    before = open_source(tmp_path).fingerprint
    target = tmp_path / "a.png"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    touched = open_source(tmp_path).fingerprint
    assert touched != before
    (tmp_path / "new.jpg").write_bytes(b"x")
    assert open_source(tmp_path).fingerprint not in (before, touched)


def test_a_plain_file_is_sent_as_it_is(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    (tmp_path / "set.tar.gz").write_bytes(data)
    src = open_source(tmp_path / "set.tar.gz")
    assert (src.size, src.name, src.content_type) == (len(data), "set.tar.gz", "application/gzip")
    assert not src.is_folder
    assert b"".join(src.read_from(0)) == data
    assert b"".join(src.read_from(1_000_001)) == data[1_000_001:]


def test_bad_paths_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        open_source(tmp_path / "missing")
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / ".hidden").write_bytes(b"x")
    with pytest.raises(ValueError, match="holds no files"):
        open_source(tmp_path / "only")


def test_members_follow_file_symlinks_but_not_folder_links(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.jpg").write_bytes(b"1")
    (tmp_path / "link.jpg").symlink_to(tmp_path / "d" / "x.jpg")
    (tmp_path / "loop").symlink_to(tmp_path, target_is_directory=True)
    assert [name for name, _ in folder_members(tmp_path)] == ["d/x.jpg", "link.jpg"]


def test_skip_and_rechunk() -> None:
    blocks = [b"abc", b"", b"defgh", b"ij"]
    for n in range(11):
        assert b"".join(skip_bytes(iter(blocks), n)) == b"abcdefghij"[n:]
    assert list(rechunk(iter(blocks), 4)) == [b"abcd", b"efgh", b"ij"]
    assert list(rechunk(iter([b"abcd"]), 2)) == [b"ab", b"cd"]
    assert list(rechunk(iter([]), 2)) == []
