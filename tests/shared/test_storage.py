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


def test_atomic_write_bytes_gives_up_after_its_tries(tmp_path: Path) -> None:
    import os

    from shared import storage
    from shared.limits import TEMP_NAME_TRIES

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
