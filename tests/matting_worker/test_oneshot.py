from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from matting_worker.engines.registry import UnknownModel
from matting_worker.oneshot import find_images, matte_folder
from tests.matting_worker.tiny_models import TinyNet, export_onnx

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _save(path: Path, size: tuple[int, int], fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format=fmt)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    _save(src / "a.jpg", (40, 30))
    _save(src / "sub" / "b.png", (25, 35))
    _save(src / "sub" / "deeper" / "c.webp", (16, 20))
    (src / "sub" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (src / "readme.txt").write_text("not an image")
    (src / ".hidden.png").write_bytes(b"")
    return src


def test_tree_is_kept(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    ticks: list[tuple[int, int]] = []
    res = matte_folder(tree, out, "identity", tmp_path / "models",
                       progress=lambda d, t: ticks.append((d, t)))
    assert res.done == 3
    assert [rel for rel, _ in res.failed] == ["sub/broken.jpg"]
    assert "image" in res.failed[0][1]
    made = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert made == ["a.png", "sub/b.png", "sub/deeper/c.png"]
    with Image.open(out / "sub" / "b.png") as im:
        assert (im.mode, im.size) == ("RGBA", (25, 35))
    original = np.asarray(Image.open(tree / "sub" / "b.png").convert("RGB"))
    np.testing.assert_array_equal(np.asarray(Image.open(out / "sub" / "b.png"))[..., :3], original)
    assert ticks[-1] == (4, 4)
    assert [d for d, _ in ticks] == sorted(d for d, _ in ticks)


def test_learned_model_batches_and_alpha_outputs(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    export_onnx(TinyNet(), models / "tiny.onnx")
    (models / "tiny.json").write_text('{"max_batch_size": 2, "input_size": 32}')
    src = tmp_path / "in"
    for i in range(5):
        _save(src / f"img{i}.png", (20 + i, 30))
    out = tmp_path / "out"
    res = matte_folder(src, out, "tiny", models, output="both")
    assert (res.done, res.failed) == (5, [])
    for i in range(5):
        with Image.open(out / f"img{i}.alpha.png") as a, Image.open(out / f"img{i}.png") as rgba:
            assert a.mode == "L" and a.size == (20 + i, 30)
            assert rgba.mode == "RGBA"
            alpha = np.asarray(a)
            assert alpha.std() > 0  # a real model's output, not a constant
            np.testing.assert_array_equal(np.asarray(rgba)[..., 3], alpha)


def test_output_inside_input_and_name_clash(tmp_path: Path) -> None:
    src = tmp_path / "in"
    _save(src / "x.jpg", (10, 10))
    _save(src / "x.png", (10, 10))
    out = src / "out"
    first = matte_folder(src, out, "identity", tmp_path, output="alpha")
    assert first.done == 1
    assert [rel for rel, _ in first.failed] == ["x.png"]
    assert "already taken by x.jpg" in first.failed[0][1]
    # the output folder inside the input is not walked on a second run
    assert [p.name for p in find_images(src, exclude=out)] == ["x.jpg", "x.png"]


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(UnknownModel):
        matte_folder(tmp_path, tmp_path / "o", "nope", tmp_path)
    with pytest.raises(ValueError, match="input folder not found"):
        matte_folder(tmp_path / "missing", tmp_path / "o", "identity", tmp_path)
    with pytest.raises(ValueError, match="output must be one of"):
        matte_folder(tmp_path, tmp_path / "o", "identity", tmp_path, output="jpeg")



def test_every_core_only_while_loading(tree: Path, tmp_path: Path) -> None:
    """The one-process run loads its engine with every core, then gives the override back:
    engines a caller makes later (a worker in the same process, a test) get their share."""
    from matting_worker.engines.device import cpu_threads
    from shared.settings import get_settings
    from shared.worker.stage import thread_count

    res = matte_folder(tree, tmp_path / "out", "identity", tmp_path / "models")
    assert res.done == 3
    assert cpu_threads() == thread_count(get_settings())


def test_many_batches_all_written_in_order(tmp_path: Path) -> None:
    """More images than a few batches: each batch's files are written while the next batch
    runs, and every one of them is there, whole, at the end (progress ends at the total)."""
    src = tmp_path / "in"
    for i in range(23):
        _save(src / f"d{i % 3}" / f"img{i:02d}.png", (20 + i, 17))
    ticks: list[tuple[int, int]] = []
    res = matte_folder(src, tmp_path / "out", "identity", tmp_path / "models",
                       progress=lambda d, t: ticks.append((d, t)))
    assert res.done == 23 and not res.failed
    for i in range(23):
        with Image.open(tmp_path / "out" / f"d{i % 3}" / f"img{i:02d}.png") as im:
            assert im.size == (20 + i, 17) and im.mode == "RGBA"
    assert ticks[-1] == (23, 23)
    assert [d for d, _ in ticks] == sorted(d for d, _ in ticks)
