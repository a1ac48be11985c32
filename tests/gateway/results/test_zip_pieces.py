"""The download's zip of a job of many small images: sent in pieces of ZIP_CHUNK_BYTES (not
one tiny piece per header and file), its members found by one listing per folder or opened in
folders opened once, symlinks never followed into it; the bytes are the same zip either
way."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

from gateway.db.tables import Task
from gateway.results.members import FINDER_FOLDERS, JobFinder, OpenFolders
from gateway.results.zip_stream import build_zip, zip_chunks
from shared.limits import ZIP_CHUNK_BYTES
from shared.storage import Storage


def _job(st: Storage, folders: int, per_folder: int) -> list[Task]:
    """Finished tasks with a tiny cut-out and sheet each, as the workers leave them."""
    tasks = []
    for f in range(folders):
        for i in range(per_folder):
            path = f"d{f:02d}/img{i:04d}.png"
            st.objects.put(st.matting_rel("j", path), b"cut " + path.encode())
            st.objects.put(st.compare_rel("j", path), b"sheet " + path.encode())
            tasks.append(Task(job_id="j", path=path, state="completed"))
    return tasks


def test_the_zip_comes_in_pieces_of_the_set_size(tmp_path: Path) -> None:
    st = Storage(tmp_path)
    tasks = _job(st, 3, 100)
    whole = build_zip(st, "j", "rgba", tasks)
    pieces = list(zip_chunks(whole, size=4096))
    # every piece but the last holds at least `size` bytes (a member is never split for it)
    assert len(pieces) > 3 and all(len(p) >= 4096 for p in pieces[:-1])
    assert len(pieces[-1]) > 0
    body = b"".join(pieces)
    assert len(body) == whole.size  # still the Content-Length announced
    zf = zipfile.ZipFile(io.BytesIO(body))
    assert zf.testzip() is None
    names = set(zf.namelist())
    assert {f"matting_output/d01/img{i:04d}.png" for i in range(100)} <= names
    assert {f"final_results/d02/img{i:04d}_compare.jpg" for i in range(100)} <= names
    assert zf.read("matting_output/d00/img0007.png") == b"cut d00/img0007.png"
    # the default piece: a zip under ZIP_CHUNK_BYTES is one piece, the same zip (its bytes
    # may differ in the report's timestamps: each build writes the report afresh)
    again = list(zip_chunks(build_zip(st, "j", "rgba", tasks)))
    assert len(body) < ZIP_CHUNK_BYTES and len(again) == 1 and len(again[0]) == len(body)
    assert zipfile.ZipFile(io.BytesIO(again[0])).namelist() == zf.namelist()


def test_a_symlink_in_a_job_folder_is_never_a_member(tmp_path: Path) -> None:
    st = Storage(tmp_path / "data")
    tasks = _job(st, 1, 3)
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"outside DATA_DIR")
    inside = st.resolve(st.matting_rel("j", "d00/img0000.png"))
    out = st.root / st.matting_rel("j", "d00/evil.png")
    os.symlink(secret, out)
    os.symlink(inside, st.root / st.matting_rel("j", "d00/twin.png"))
    tasks += [Task(job_id="j", path="d00/evil.png", state="completed"),
              Task(job_id="j", path="d00/twin.png", state="completed")]
    zf = zipfile.ZipFile(io.BytesIO(b"".join(zip_chunks(build_zip(st, "j", "rgba", tasks)))))
    names = zf.namelist()
    assert "matting_output/d00/img0000.png" in names
    assert "matting_output/d00/evil.png" not in names  # leads out of DATA_DIR
    assert "matting_output/d00/twin.png" not in names  # leads inside: still not followed
    assert all(b"outside DATA_DIR" not in zf.read(n) for n in names)
    rows = {r["path"]: r for r in json.loads(zf.read("report.json"))["items"]}
    # the report says the cut-out is not there, as for any missing file
    assert rows["d00/evil.png"]["matting_output"] is None
    assert rows["d00/img0000.png"]["matting_output"] == "matting_output/d00/img0000.png"


def test_the_finder_lists_each_folder_once_and_keeps_few(tmp_path: Path) -> None:
    st = Storage(tmp_path)
    folders = FINDER_FOLDERS * 3
    _job(st, folders, 4)
    finder = JobFinder(st)
    listed: list[str] = []
    real = finder._folder

    def counting(folder: str) -> tuple[Path, frozenset[str]] | None:
        if folder not in finder._folders:
            listed.append(folder)
        return real(folder)

    finder._folder = counting  # type: ignore[method-assign]
    for f in range(folders):
        for i in range(4):
            path = f"d{f:02d}/img{i:04d}.png"
            assert finder.find(st.matting_rel("j", path)) == st.resolve(st.matting_rel("j", path))
        assert finder.find(st.matting_rel("j", f"d{f:02d}/absent.png")) is None
    assert len(listed) == folders == len(set(listed))  # one listing per folder
    assert len(finder._folders) <= FINDER_FOLDERS  # memory: the last few folders only
    # names no file can have are "no file", not an error
    assert finder.find("matting_output/j/../../etc/passwd") is None
    assert finder.find("matting_output/nojob/d00/img0000.png") is None


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_open_folders_open_plain_files_only_and_hold_few_folders(tmp_path: Path) -> None:
    """A finished job's zip opens its members in their folders (`OpenFolders`): a plain file
    comes back open with its `fstat`; a missing name, a symlink (out of DATA_DIR or into it),
    a folder, a FIFO (never waited on: no writer) and a folder outside DATA_DIR are "no
    file"; each folder is opened once, at most FINDER_FOLDERS stay open, `close` closes
    them all."""
    st = Storage(tmp_path / "data")
    _job(st, FINDER_FOLDERS + 2, 2)
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"outside DATA_DIR")
    d00 = st.root / "matting_output" / "j" / "d00"
    os.symlink(secret, d00 / "out.png")
    os.symlink(d00 / "img0000.png", d00 / "twin.png")
    os.mkfifo(d00 / "fifo.png")
    (d00 / "dir.png").mkdir()
    before = _open_fds()
    folders = OpenFolders(st)
    try:
        found = folders.open("matting_output/j/d00/img0001.png")
        assert found is not None
        fd, info = found
        try:
            assert os.read(fd, info.st_size + 1) == b"cut d00/img0001.png"
            assert info.st_size == len(b"cut d00/img0001.png")
        finally:
            os.close(fd)
        for name in ("absent.png", "out.png", "twin.png", "fifo.png", "dir.png", "..", "."):
            assert folders.open(f"matting_output/j/d00/{name}") is None, name
        assert folders.open("matting_output/j/../../../secret.txt") is None  # outside
        assert folders.open("matting_output/j/nofolder/img0000.png") is None
        assert _open_fds() == before + 1  # d00 opened once for all of those
        for f in range(FINDER_FOLDERS + 2):
            found = folders.open(f"final_results/j/d{f:02d}/img0000_compare.jpg")
            assert found is not None
            os.close(found[0])
        assert _open_fds() <= before + FINDER_FOLDERS  # the last few folders only
    finally:
        folders.close()
    assert _open_fds() == before
