from pathlib import Path

import pytest

from shared.storage import (
    PathNotAllowed,
    PathOutsideDataDir,
    Storage,
    atomic_write,
    atomic_write_bytes,
)


@pytest.mark.parametrize("bad", ["/etc/passwd", "../x", "a/../../x", "", "a\\b", "a\x00b"])
def test_resolve_refuses_escapes(tmp_path: Path, bad: str) -> None:
    with pytest.raises(PathOutsideDataDir):
        Storage(tmp_path).resolve(bad)


def test_resolve_refuses_symlink_out(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "link").symlink_to(tmp_path)
    with pytest.raises(PathOutsideDataDir):
        Storage(tmp_path / "data").resolve("link/secret")


def test_output_names_keep_the_tree(tmp_path: Path) -> None:
    s = Storage(tmp_path)
    assert s.matting_rel("j", "a/b/photo.jpg") == "matting_output/j/a/b/photo.png"
    assert s.compare_rel("j", "a/b/photo.jpg") == "final_results/j/a/b/photo_compare.jpg"


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


# --- issue 17: cheaper atomic writes and path checks, the same rules ---------------------------
def test_atomic_write_bytes_skips_a_leftover_and_makes_the_folder(tmp_path: Path) -> None:
    """The temporary name is `.<name>.<pid>-<n>.tmp` with O_EXCL: a leftover of a dead process
    with this pid is never opened or overwritten; a missing folder is made; mode 0600, as
    mkstemp's; nothing is left beside the target."""
    import os

    from shared import storage

    folder = tmp_path / "a" / "b"
    target = folder / "out.png"
    atomic_write_bytes(target, b"first")  # the folder did not exist
    assert target.read_bytes() == b"first"
    n = next(storage._TEMP_SEQ) + 1
    folder.joinpath(f".out.png.{os.getpid()}-{n}.tmp").write_bytes(b"leftover")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert folder.joinpath(f".out.png.{os.getpid()}-{n}.tmp").read_bytes() == b"leftover"
    assert target.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in folder.iterdir()) == [
        f".out.png.{os.getpid()}-{n}.tmp", "out.png"]


def test_atomic_write_bytes_gives_up_after_its_tries(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from shared import storage
    from shared.limits import TEMP_NAME_TRIES

    monkeypatch.setattr(storage, "_tmpfile_works", False)  # the named path, as without O_TMPFILE

    n = next(storage._TEMP_SEQ) + 1
    for k in range(n, n + TEMP_NAME_TRIES):
        tmp_path.joinpath(f".x.{os.getpid()}-{k}.tmp").write_bytes(b"")
    with pytest.raises(FileExistsError):
        atomic_write_bytes(tmp_path / "x", b"data")
    assert not (tmp_path / "x").exists()


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    (tmp_path / "target").mkdir()  # os.replace cannot put a file over a folder
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "target", b"data")
    assert [p.name for p in tmp_path.iterdir()] == ["target"]


def test_job_file_refuses_a_folder_swapped_for_a_symlink_after_it_was_seen(
        tmp_path: Path) -> None:
    """The job folder's resolution is remembered, the file's is not: a job folder replaced by
    a symlink to another job (or out of DATA_DIR) after its first use is refused."""
    data, outside = tmp_path / "data", tmp_path / "outside"
    s = Storage(data)
    s.ensure_layout()
    job = data / "input" / "j1"
    job.mkdir()
    (job / "a.png").write_bytes(b"x")
    assert s.job_file("input/j1/a.png", "input", "j1") == job / "a.png"
    for elsewhere in (outside, data / "input" / "j2"):
        elsewhere.mkdir()
        (elsewhere / "a.png").write_bytes(b"y")
        job.rename(tmp_path / f"old-{elsewhere.name}")
        job.symlink_to(elsewhere)
        with pytest.raises((PathOutsideDataDir, PathNotAllowed)):
            s.job_file("input/j1/a.png", "input", "j1")
        job.unlink()
        (tmp_path / f"old-{elsewhere.name}").rename(job)
    assert s.target_name(s.job_file("input/j1/a.png", "input", "j1")) == "input/j1/a.png"


def test_a_symlinked_file_is_resolved_on_every_call(tmp_path: Path) -> None:
    s = Storage(tmp_path / "data")
    s.ensure_layout()
    job = tmp_path / "data" / "matting_output" / "j"
    job.mkdir()
    assert s.job_file("matting_output/j/x.png", "matting_output", "j", ".png")
    (job / "x.png").symlink_to(tmp_path)  # now a link out of DATA_DIR
    with pytest.raises(PathOutsideDataDir):
        s.job_file("matting_output/j/x.png", "matting_output", "j", ".png")


# --- issue 17, orchestration: a new file through an unnamed one (O_TMPFILE + linkat) ---------
def test_a_new_file_is_written_unnamed_and_linked_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rule two without a temporary name: while the bytes are written the target has no name
    at all (no reader can open half of it) and no temporary name appears beside it; it is
    linked whole, mode 0600 as before."""
    from shared import storage

    if not storage._tmpfile_works:
        pytest.skip("no O_TMPFILE on this file system")
    target = tmp_path / "sub" / "out.png"
    seen: list[tuple[bool, list[str]]] = []
    real = storage.write_all

    def write_and_look(fd: int, chunks: list[bytes]) -> int:
        data = b"".join(chunks)
        n = real(fd, [data[:3]])
        seen.append((target.exists(), sorted(p.name for p in target.parent.iterdir())))
        return n + real(fd, [data[3:]])

    monkeypatch.setattr(storage, "write_all", write_and_look)
    atomic_write_bytes(target, b"0123456789")  # the folder did not exist either
    assert seen == [(False, [])]
    assert target.read_bytes() == b"0123456789"
    assert target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["out.png"]


def test_an_existing_file_is_replaced_through_a_renamed_temporary(tmp_path: Path) -> None:
    """linkat cannot replace a name: a second write of the same target (a retry, a result
    written again) takes the temporary name and rename, and leaves nothing else behind."""
    from shared import storage

    target = tmp_path / "out.png"
    atomic_write_bytes(target, b"first")
    before = next(storage._TEMP_SEQ)
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert next(storage._TEMP_SEQ) > before + 1  # the named path took a number
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_without_unnamed_files_every_write_is_named_and_renamed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where O_TMPFILE is refused (a file system without it), `_write_new` declines and the
    write is the named one, with the same result."""
    from shared import storage

    monkeypatch.setattr(storage, "_tmpfile_works", False)
    before = next(storage._TEMP_SEQ)
    atomic_write_bytes(tmp_path / "a" / "x.bin", b"data")
    assert (tmp_path / "a" / "x.bin").read_bytes() == b"data"
    assert next(storage._TEMP_SEQ) > before + 1
    assert storage._write_new(tmp_path / "a" / "y.bin", b"data") is False
    assert not (tmp_path / "a" / "y.bin").exists()


def test_an_unnamed_write_that_fails_leaves_no_file(tmp_path: Path) -> None:
    """A write whose target's folder is a file fails as the named write would (an OSError),
    with nothing left anywhere."""
    (tmp_path / "plain").write_bytes(b"a file, not a folder")
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "plain" / "x.png", b"data")
    assert [p.name for p in tmp_path.iterdir()] == ["plain"]


# --- issue 17, orchestration: realpath through the kernel, the same answers --------------------
def _tree_with_links(root: Path) -> list[str]:
    """Folders, files, and symlinks of every kind (relative, absolute, into and out of the
    tree, to a file, dangling, looping, through `..`): the names to resolve."""
    import os

    (root / "a" / "b").mkdir(parents=True)
    (root / "out").mkdir()
    (root / "a" / "b" / "f.png").write_bytes(b"x")
    (root / "a" / "f2 (deleted)").write_bytes(b"x")
    links = {
        "a/up": "..", "a/to_b": "b", "a/abs_b": str(root / "a" / "b"), "a/file_link": "b/f.png",
        "a/dangling": "nowhere/f.png", "a/loop1": "loop2", "a/loop2": "loop1",
        "a/b/out_link": str(root / "out"), "a/b/dotdot": "../../out",
    }
    for name, to in links.items():
        os.symlink(to, root / name)
    names = ["", "a", "a/b", "a/b/f.png", "a/f2 (deleted)", "out", "nothing", "a/nothing/x",
             "a/b/f.png/x", "a/b/new.png", "a/./b/../b/f.png", "a/b/", "a//b", "a/b/.", "a/.."]
    names += list(links)
    names += [f"{ln}/{tail}" for ln in links for tail in ("f.png", "new.png", "b/f.png", "..")]
    return names


def test_realpath_answers_as_os_path_realpath(tmp_path: Path) -> None:
    """Every name of a tree full of symlinks (and missing names, loops, files used as
    folders, a name that ends in ' (deleted)') resolves exactly as `os.path.realpath` does."""
    import os

    from shared.storage import realpath

    for name in _tree_with_links(tmp_path):
        path = os.path.join(str(tmp_path), name)
        assert realpath(path) == os.path.realpath(path), name
    assert realpath("relative/name") == os.path.realpath("relative/name")
    assert realpath("/") == "/"


def test_a_symlink_out_of_the_job_folder_is_still_refused(tmp_path: Path) -> None:
    """`resolve_under` and `job_file` on the kernel's realpath: a symlinked file or folder that
    leads out of DATA_DIR or the job's folder is refused as before."""
    import os

    data = tmp_path / "data"
    s = Storage(data)
    s.ensure_layout()
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "key.png").write_bytes(b"k")
    job = data / "input" / "j1"
    job.mkdir()
    os.symlink(tmp_path / "secret" / "key.png", job / "a.png")
    os.symlink(tmp_path / "secret", job / "sub")
    (data / "input" / "j2").mkdir()
    (data / "input" / "j2" / "b.png").write_bytes(b"b")
    os.symlink(data / "input" / "j2" / "b.png", job / "other.png")
    for rel in ("input/j1/a.png", "input/j1/sub/key.png", "input/j1/sub/new.png"):
        with pytest.raises(PathOutsideDataDir):
            s.resolve(rel)
        with pytest.raises(PathOutsideDataDir):
            s.job_file(rel, "input", "j1")
    with pytest.raises(PathNotAllowed):
        s.job_file("input/j1/other.png", "input", "j1")


def test_stem_path_cuts_strings_as_pathlib_does() -> None:
    """`Storage.stem_path` works on the string (two names per image in a download's walk):
    every path of up to five parts of a small alphabet gets pathlib's answer."""
    import itertools
    from pathlib import PurePosixPath

    def pathlib_stem(rel: str) -> str:
        p = PurePosixPath(rel)
        return str(p.with_suffix("")) if p.suffix else str(p)

    for k in range(1, 6):
        for parts in itertools.product(["a", ".", "/", "b.c", "..", "x"], repeat=k):
            rel = "".join(parts)
            assert Storage.stem_path(rel) == pathlib_stem(rel), rel
