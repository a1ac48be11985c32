"""The comparison sheet: bounded size, one row per model, the heat map only with ground truth."""

import numpy as np
import pytest

from comparison_worker.engine import compare
from comparison_worker.sheet import (
    GAP,
    MIN_SHEET_W,
    TILE_MAX_H,
    TILE_MAX_W,
    TILE_MIN_SIDE,
    heat_colours,
    pick_solid_colour,
    render_sheet,
    tile_size,
)


def scene(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w]
    alpha = (((yy - h / 2) / (h / 3)) ** 2 + ((xx - w / 2) / (w / 3)) ** 2 <= 1).astype(np.float32)
    rgb = np.empty((h, w, 3), np.uint8)
    rgb[:] = (250, 250, 250)  # white studio backdrop
    rgb[alpha > 0] = (200, 40, 40)
    return rgb, alpha


def test_tile_size_is_bounded() -> None:
    assert tile_size(6000, 4000) == (480, 320)
    tw, th = tile_size(4000, 6000)
    assert th == TILE_MAX_H and tw <= TILE_MAX_W
    tw, th = tile_size(20000, 1000)
    assert tw == TILE_MAX_W and th <= TILE_MAX_H
    assert tile_size(10, 10) == (40, 40)  # small inputs are enlarged, but only 4×


def test_large_input_gives_a_small_sheet() -> None:
    rgb, alpha = scene(2000, 3000)
    sheet = render_sheet(rgb, [("classical", alpha, {"coverage": 0.3})], gt=alpha)
    assert sheet.dtype == np.uint8 and sheet.ndim == 3 and sheet.shape[2] == 3
    h, w, _ = sheet.shape
    assert w == 5 * 480 + 6 * GAP
    assert 320 < h < 320 + 120


def test_one_row_per_model_and_heat_map_only_with_gt() -> None:
    rgb, alpha = scene(120, 160)
    soft = np.clip(alpha * 0.8 + 0.1, 0, 1).astype(np.float32)
    one = compare(rgb, [("classical", alpha)], None)
    two = compare(rgb, [("classical", alpha), ("u2netp", soft)], None)
    with_gt = compare(rgb, [("classical", alpha), ("u2netp", soft)], alpha)
    tw, th = tile_size(160, 120)
    assert one.sheet.shape[1] == two.sheet.shape[1] == 4 * tw + 5 * GAP
    assert with_gt.sheet.shape[1] == 5 * tw + 6 * GAP
    row_h = two.sheet.shape[0] - one.sheet.shape[0]
    assert row_h > th  # a caption and a full row of tiles
    three = compare(rgb, [("classical", alpha), ("u2netp", soft), ("identity", alpha)], None)
    assert three.sheet.shape[0] - two.sheet.shape[0] == row_h
    assert set(two.metrics) == {"classical", "u2netp"}
    assert "sad" not in two.metrics["classical"] and "sad" in with_gt.metrics["u2netp"]
    assert with_gt.metrics["classical"]["sad"] == 0.0


def _tile(sheet: np.ndarray, col: int, tw: int, th: int) -> np.ndarray:
    """The last row's tile in column col (rows end with GAP below the tiles)."""
    bottom = sheet.shape[0] - GAP
    left = GAP + col * (tw + GAP)
    return sheet[bottom - th : bottom, left : left + tw]


def test_tiles_show_what_they_say() -> None:
    rgb, alpha = scene(90, 120)
    wrong = np.zeros_like(alpha)
    sheet = render_sheet(rgb, [("perfect", alpha, {}), ("empty", wrong, {})], gt=alpha)
    tw, th = tile_size(120, 90)
    assert (_tile(sheet, 0, tw, th)[th // 2, tw // 2] == (200, 40, 40)).all()
    assert _tile(sheet, 1, tw, th).max() == 0  # the last row is the empty matte
    checker = _tile(sheet, 2, tw, th).reshape(-1, 3)
    assert len(np.unique(checker, axis=0)) == 2  # nothing but the two checker greys
    heat = _tile(sheet, 4, tw, th).reshape(-1, 3)
    # The empty matte misses the whole subject: the brightest colour of the ramp shows up.
    assert (heat == heat_colours()[255]).all(axis=1).sum() > 0.2 * tw * th
    _name, colour = pick_solid_colour(rgb, alpha)
    solid_tile = _tile(sheet, 3, tw, th).reshape(-1, 3)
    # With α = 0 everywhere, the solid composite is the backdrop colour only.
    assert (np.abs(solid_tile.astype(int) - colour).max(axis=1) <= 1).all()


def test_solid_colour_differs_from_the_background() -> None:
    rgb, alpha = scene(40, 40)
    rgb[alpha == 0] = (0, 200, 0)  # a green screen
    name, _ = pick_solid_colour(rgb, alpha)
    assert name != "green"


def test_bad_inputs_are_refused() -> None:
    rgb, alpha = scene(40, 50)
    with pytest.raises(ValueError, match="image is 50x40"):
        compare(rgb, [("m", alpha[:, :30])], None)
    with pytest.raises(ValueError, match="ground truth"):
        compare(rgb, [("m", alpha)], alpha[:30])
    with pytest.raises(ValueError, match="no matte"):
        compare(rgb, [], None)
    with pytest.raises(ValueError, match="duplicate"):
        compare(rgb, [("m", alpha), ("m", alpha)], None)


def test_tiny_inputs_get_small_sheets() -> None:
    """A 32 px icon's tiles are enlarged to TILE_MIN_SIDE only, not to photo size: its sheet
    is the narrowest one (MIN_SHEET_W) and far smaller than a photo's."""
    assert tile_size(32, 32) == (TILE_MIN_SIDE, TILE_MIN_SIDE)
    assert tile_size(64, 48) == (64, 48)  # at the minimum already: its own size
    assert tile_size(200, 100) == (200, 100)  # between the bounds: never scaled
    rgb, alpha = scene(32, 32)
    tiny = render_sheet(rgb, [("identity", alpha, {"coverage": 0.3})])
    rgb, alpha = scene(640, 480)
    photo = render_sheet(rgb, [("identity", alpha, {"coverage": 0.3})])
    assert tiny.shape[1] == MIN_SHEET_W
    assert tiny.shape[0] * tiny.shape[1] * 3 < photo.shape[0] * photo.shape[1]


# --- issue 17: text is rendered once per (text, size) and pasted ------------------------------
@pytest.mark.parametrize("text", ["identity", "on magenta", "SAD 1.234   MSE 0.0012",
                                  "coverage 12.3%   uncertain 0.4%   border alpha 3.1%",
                                  "jÿ_(g)", ""])
@pytest.mark.parametrize("size", [12, 13, 20, 24])
def test_cached_text_is_pixel_for_pixel_what_imagedraw_draws(text: str, size: int) -> None:
    """`_draw_text` (a cached coverage mask pasted with the colour) gives exactly the pixels
    `ImageDraw.text` gives, at the sheet's sizes, with descenders and glyphs that start left of
    the origin; twice in a row (the second from the cache) and near the canvas's edges."""
    from PIL import Image, ImageDraw

    from comparison_worker.sheet import BACKDROP, TEXT, _draw_text, _font

    for xy in [(GAP, 3), (0, 0), (50, 30), (-4, 38)]:
        want = Image.new("RGB", (120, 44), BACKDROP)
        ImageDraw.Draw(want).text(xy, text, font=_font(size), fill=TEXT)
        for _ in range(2):
            got = Image.new("RGB", (120, 44), BACKDROP)
            _draw_text(got, xy, text, size, TEXT)
            assert np.array_equal(np.asarray(got), np.asarray(want)), (xy, text, size)


def test_the_checkerboard_is_shared_and_read_only() -> None:
    from comparison_worker.sheet import _checkerboard

    board = _checkerboard((64, 48))
    assert board is _checkerboard((64, 48)) and not board.flags.writeable
    with pytest.raises(ValueError):
        board[0, 0, 0] = 0.0


# --- issue 17, point 2: a small input's tiles without PIL images --------------------------------
@pytest.mark.parametrize(("h", "w"), [(32, 32), (16, 16), (20, 50), (33, 17), (64, 64), (8, 8),
                                      (1, 1), (100, 80), (17, 160)])
def test_whole_factor_tiles_are_pils_pixels(h: int, w: int) -> None:
    """A tile that is the input at k× (or at its own size) is made by repeating pixels: the
    same pixels as PIL's NEAREST resize (and its copy at the same size), for RGB and mattes."""
    from PIL import Image

    from comparison_worker.sheet import _resize_float, _resize_rgb

    rng = np.random.default_rng(h * 1000 + w)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    alpha = rng.random((h, w)).astype(np.float32) * 1.2 - 0.1  # out of range: clipped
    size = tile_size(w, h)
    for k in (1, 2, 3, 4):
        for target in ((w * k, h * k), size):
            want_rgb = np.asarray(Image.fromarray(rgb, "RGB").resize(
                target, Image.Resampling.NEAREST))
            want_a = np.clip(np.asarray(Image.fromarray(alpha, "F").resize(
                target, Image.Resampling.NEAREST), dtype=np.float32), 0.0, 1.0)
            assert np.array_equal(_resize_rgb(rgb, target), want_rgb), (k, target)
            assert np.array_equal(_resize_float(alpha, target), want_a), (k, target)
