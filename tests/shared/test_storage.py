from pathlib import Path

import pytest

from shared.storage import PathOutsideDataDir, Storage, atomic_write


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
