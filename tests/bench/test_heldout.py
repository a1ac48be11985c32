"""The held-out quality set: repeatable, shaped like the team's set, and honest ground truth."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

from bench.heldout import generate, item
from shared.imaging import decode_alpha, decode_rgb

QUALITY_COLUMNS = ["name", "image", "gt", "background", "edge", "glass", "width", "height"]


def test_an_item_is_the_same_every_time() -> None:
    a, b = item(5, 3), item(5, 3)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.gt, b.gt)
    assert not np.array_equal(item(6, 3).gt, a.gt)


def test_generated_set_has_the_quality_set_layout(tmp_path: Path) -> None:
    out = generate(tmp_path / "set", seed=1, count=9)
    rows = list(csv.DictReader((out / "manifest.csv").open()))
    assert len(rows) == 9 and list(rows[0])[: len(QUALITY_COLUMNS)] == QUALITY_COLUMNS
    assert {r["background"] for r in rows} == {"plain", "gradient", "textured"}
    assert {r["edge"] for r in rows} == {"hard", "soft", "hair"}
    for r in rows:
        image, gt = decode_rgb(out / r["image"]), decode_alpha(out / r["gt"])
        assert image.shape[:2] == gt.shape == (int(r["height"]), int(r["width"]))
        assert r["image"].endswith(".png" if r["edge"] == "hard" else ".jpg")


def test_object_stays_inside_the_frame() -> None:
    for i in range(6):
        gt = item(2, i).gt
        assert gt[0].max() == gt[-1].max() == gt[:, 0].max() == gt[:, -1].max() == 0


def test_hair_and_glass_give_partial_alpha() -> None:
    hair = item(1, 2)  # plain, hair, opaque
    strands = (hair.gt > 5) & (hair.gt < 250)
    assert hair.edge == "hair" and strands.sum() > 300
    glass = item(1, 9)  # plain, hard, glass: a plateau at one level between 0.35 and 0.7
    assert glass.glass and glass.edge == "hard"
    values, counts = np.unique(glass.gt[(glass.gt > 5) & (glass.gt < 250)], return_counts=True)
    level = int(values[np.argmax(counts)])
    assert 0.35 * 255 - 1 <= level <= 0.7 * 255 + 1
    assert counts.max() > 500


def test_composite_follows_its_alpha() -> None:
    """Where alpha is 0 the image is the backdrop alone: its border matches a smooth plain
    backdrop's colour, and pixels far from the object do not change with the object."""
    it = item(3, 0)  # plain, hard
    bg = it.gt == 0
    spread = it.image[bg].astype(np.float32).std(axis=0)
    assert it.background == "plain" and float(spread.max()) < 4.0
    fg = cv2.erode((it.gt == 255).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert np.linalg.norm(it.image[fg].mean(0) - it.image[bg].mean(0)) > 60
