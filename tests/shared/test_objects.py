"""The object-store contract (shared.objects), run against every backend: LocalStore on a temp
folder and S3Store on a real SeaweedFS (tests/support/seaweed.py), each test on a fresh
prefix. One module, so both backends answer every question the same way."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from shared.errors import InputRejected, ObjectMissing
from shared.objects import LocalStore, ObjectStore, S3Store, check_key, open_store
from shared.settings import Settings
from shared.storage import PathOutsideDataDir, Storage

BAD_KEYS = ["/etc/passwd", "../x", "a/../../x", "", "a\\b", "a\x00b", "a//b", "./a/../.."]


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalStore(tmp_path / "data")
    storage: Storage = request.getfixturevalue("s3_storage")
    assert isinstance(storage.objects, S3Store)
    return storage.objects


def test_put_get_roundtrip_and_replace(store: ObjectStore) -> None:
    store.put("input/j1/a/b.jpg", b"one")
    assert store.get("input/j1/a/b.jpg") == b"one"
    store.put("input/j1/a/b.jpg", b"two!")
    assert store.get("input/j1/a/b.jpg") == b"two!"
    assert store.size("input/j1/a/b.jpg") == 4
    assert store.exists("input/j1/a/b.jpg")


def test_missing_keys(store: ObjectStore) -> None:
    with pytest.raises(ObjectMissing):
        store.get("input/j1/none.jpg")
    with pytest.raises(FileNotFoundError):  # ObjectMissing is one: file code keeps working
        store.open_read("input/j1/none.jpg")
    assert store.size("input/j1/none.jpg") is None
    assert not store.exists("input/j1/none.jpg")
    store.delete("input/j1/none.jpg")  # not an error
    assert store.delete_prefix("input/none/") == 0
    store.put("input/j1/a/b.jpg", b"x")
    assert store.size("input/j1/a") is None  # a "folder" is not an object


@pytest.mark.parametrize("bad", BAD_KEYS)
def test_bad_keys_refused_everywhere(store: ObjectStore, bad: str) -> None:
    calls = [
        lambda: store.get(bad), lambda: store.put(bad, b"x"), lambda: store.open_read(bad),
        lambda: store.size(bad), lambda: store.delete(bad), lambda: store.start_multipart(bad),
        lambda: store.local_path(bad),
    ]
    for call in calls:
        with pytest.raises(PathOutsideDataDir) as info:
            call()
        assert isinstance(info.value, InputRejected)


def test_bad_prefixes_refused(store: ObjectStore) -> None:
    for bad in ("../", "/abs/", "a/../../"):
        with pytest.raises(PathOutsideDataDir):
            list(store.list(bad))
    with pytest.raises(ValueError):
        store.delete_prefix("")
    with pytest.raises(ValueError):
        store.delete_prefix("/")


def test_put_file_and_open_read_seeks(store: ObjectStore, tmp_path: Path) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB, every offset distinguishable
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    store.put_file("input/j1/big.bin", src)
    assert store.size("input/j1/big.bin") == len(data)
    with store.open_read("input/j1/big.bin") as f:
        assert f.seekable()
        assert f.read(10) == data[:10]
        f.seek(500_000)
        assert f.read(1000) == data[500_000:501_000]
        f.seek(-100, io.SEEK_END)
        assert f.read() == data[-100:]
        assert f.tell() == len(data)
        f.seek(3)
        f.seek(7, io.SEEK_CUR)
        assert f.read(5) == data[10:15]
        assert f.read(0) == b""


def test_put_file_in_parts(store: ObjectStore, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Above OBJECT_PUT_FILE_PART_BYTES a file goes up as a multipart upload (S3), whole."""
    import shared.objects

    monkeypatch.setattr(shared.objects, "OBJECT_PUT_FILE_PART_BYTES", 5 * 1024 * 1024)
    data = bytes(range(256)) * (11 * 4096) + b"tail"  # 11 MiB + 4 bytes: three parts
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    store.put_file("input/j1/video.mp4", src)
    assert store.size("input/j1/video.mp4") == len(data)
    assert store.get("input/j1/video.mp4") == data


def test_archives_read_straight_from_objects(store: ObjectStore) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(20):
            zf.writestr(f"d/{i}.txt", f"member {i}" * 100)
    store.put("input/j1/a.zip", buf.getvalue())
    with store.open_read("input/j1/a.zip") as f, zipfile.ZipFile(f) as zf:
        assert len(zf.namelist()) == 20
        assert zf.read("d/13.txt") == b"member 13" * 100
    tbuf = io.BytesIO()
    with tarfile.open(fileobj=tbuf, mode="w") as tf:
        info = tarfile.TarInfo("x/y.txt")
        info.size = 5
        tf.addfile(info, io.BytesIO(b"hello"))
    store.put("input/j1/a.tar", tbuf.getvalue())
    with store.open_read("input/j1/a.tar") as f, tarfile.open(fileobj=f, mode="r:") as tf:
        member = tf.extractfile("x/y.txt")
        assert member is not None and member.read() == b"hello"


def test_list_is_sorted_prefix_match(store: ObjectStore) -> None:
    for key in ("input/j1/b.jpg", "input/j1/a/c.jpg", "input/j1.x/z.jpg", "input/j10/q.jpg",
                "input/j1/a.b.jpg", "final_results/j1/a.png"):
        store.put(key, key.encode())
    assert [k for k, _ in store.list("input/j1/")] == [
        "input/j1/a.b.jpg", "input/j1/a/c.jpg", "input/j1/b.jpg"]
    assert [k for k, _ in store.list("input/j1")] == [
        "input/j1.x/z.jpg", "input/j1/a.b.jpg", "input/j1/a/c.jpg", "input/j1/b.jpg",
        "input/j10/q.jpg"]
    assert dict(store.list("final_results/"))["final_results/j1/a.png"] == len(
        b"final_results/j1/a.png")
    assert list(store.list("nothing/")) == []


def test_delete_and_delete_prefix(store: ObjectStore) -> None:
    for key in ("input/j1/a.jpg", "input/j1/d/b.jpg", "input/j10/c.jpg"):
        store.put(key, b"x")
    store.delete("input/j1/a.jpg")
    assert not store.exists("input/j1/a.jpg")
    assert store.delete_prefix("input/j1/") == 1
    assert [k for k, _ in store.list("input/")] == ["input/j10/c.jpg"]


def test_copy(store: ObjectStore) -> None:
    store.put("matting_output/j1/a.png", b"cut")
    store.copy("matting_output/j1/a.png", "matting_output/j2/b.png")
    store.put("matting_output/j1/a.png", b"new")  # the copy keeps the old bytes
    assert store.get("matting_output/j2/b.png") == b"cut"
    with pytest.raises(ObjectMissing):
        store.copy("matting_output/j1/none.png", "matting_output/j2/c.png")
    assert not store.exists("matting_output/j2/c.png")
    with pytest.raises(PathOutsideDataDir):
        store.copy("matting_output/j1/a.png", "../x.png")


def test_multipart_joins_parts_in_order(store: ObjectStore) -> None:
    part = 5 * 1024 * 1024  # S3's smallest part but the last
    uid = store.start_multipart("input/j1/up.bin")
    e2 = store.upload_part("input/j1/up.bin", uid, 2, b"B" * 10)
    e1 = store.upload_part("input/j1/up.bin", uid, 1, b"X" * part)
    e1 = store.upload_part("input/j1/up.bin", uid, 1, b"A" * part)  # sent again: replaces
    assert not store.exists("input/j1/up.bin")  # nothing visible before complete
    store.complete_multipart("input/j1/up.bin", uid, [(1, e1), (2, e2)])
    assert store.get("input/j1/up.bin") == b"A" * part + b"B" * 10
    assert [k for k, _ in store.list("")] == ["input/j1/up.bin"]


def test_multipart_abort_and_bad_parts(store: ObjectStore) -> None:
    uid = store.start_multipart("input/j1/up.bin")
    for bad in (0, 10_001, -1):
        with pytest.raises(ValueError):
            store.upload_part("input/j1/up.bin", uid, bad, b"x")
    store.upload_part("input/j1/up.bin", uid, 1, b"x")
    store.abort_multipart("input/j1/up.bin", uid)
    assert not store.exists("input/j1/up.bin")
    assert list(store.list("")) == []
    store.abort_multipart("input/j1/up.bin", uid)  # twice: not an error


def test_local_path_is_the_file(tmp_path: Path) -> None:
    s = LocalStore(tmp_path)
    s.put("final_results/j/a.png", b"png")
    p = s.local_path("final_results/j/a.png")
    assert p == tmp_path.resolve() / "final_results/j/a.png" and p.read_bytes() == b"png"


def test_local_refuses_symlink_out(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "secret").write_text("s")
    (tmp_path / "data" / "link").symlink_to(tmp_path)
    with pytest.raises(PathOutsideDataDir):
        LocalStore(tmp_path / "data").get("link/secret")


def test_local_listing_hides_temp_files_and_parts(tmp_path: Path) -> None:
    s = LocalStore(tmp_path)
    s.put("input/j/a.jpg", b"x")
    (tmp_path / "input/j/.a.jpg.123.tmp").write_bytes(b"half")
    s.start_multipart("input/j/b.jpg")
    assert list(s.list("")) == [("input/j/a.jpg", 1)]


def test_check_key_and_open_store(tmp_path: Path) -> None:
    assert check_key("input/j/a.jpg") == "input/j/a.jpg"
    store = open_store(Settings(data_dir=tmp_path, storage_url=""))
    assert isinstance(store, LocalStore) and store.root == tmp_path.resolve()


def test_storage_defaults_to_local_objects(tmp_path: Path) -> None:
    st = Storage(tmp_path)
    assert isinstance(st.objects, LocalStore) and st.is_local
    st.objects.put("input/j/a.jpg", b"x")
    assert st.resolve("input/j/a.jpg").read_bytes() == b"x"
    assert Storage.from_settings(Settings(data_dir=tmp_path)).objects.get("input/j/a.jpg") == b"x"


def test_s3_store_from_settings(s3_settings: Settings) -> None:
    store = open_store(s3_settings)
    assert isinstance(store, S3Store) and store.local_path("input/j/a.jpg") is None
    assert not Storage.from_settings(s3_settings).is_local
    assert store.describe().startswith("s3://")


def test_s3_prefixes_keep_deployments_apart(s3_settings: Settings) -> None:
    a = open_store(s3_settings)
    b = open_store(s3_settings.model_copy(update={"storage_url": s3_settings.storage_url + "x"}))
    a.put("input/j/a.jpg", b"a")
    assert not b.exists("input/j/a.jpg") and list(b.list("")) == []


def test_s3_presigned_get_needs_no_credentials(s3_settings: Settings) -> None:
    import httpx

    store = open_store(s3_settings)
    assert isinstance(store, S3Store)
    store.put("reports/j/report.json", b"{}")
    assert httpx.get(store.presign_get("reports/j/report.json", 60)).content == b"{}"


def test_storage_url_must_be_s3_or_empty(tmp_path: Path) -> None:
    from shared.errors import ConfigError

    with pytest.raises(ConfigError):
        open_store(Settings(data_dir=tmp_path, storage_url="gs://bucket/x"))
    with pytest.raises(ConfigError):
        open_store(Settings(data_dir=tmp_path, storage_url="s3://"))
