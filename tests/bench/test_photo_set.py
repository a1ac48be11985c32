"""The photo-like set of the confidence report (issue 16, third pass): the third set's
photo-like kinds only, and the seeds `make bench` uses for it."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from bench import third_set
from bench.quality import PHOTO_SEEDS, photo_seeds_from_env


def test_generate_keeps_only_the_kinds_asked_for(tmp_path: Path) -> None:
    """Images 0–15 hold two of each kind; with the photo-like kinds only those four are
    written, and each is the same image as in the full set (same index, same name)."""
    out = third_set.generate(tmp_path / "p", 3, 16, third_set.PHOTO_KINDS)
    rows = list(csv.DictReader((out / "manifest.csv").open()))
    assert sorted(r["kind"] for r in rows) == ["cluttered", "cluttered", "photo_backdrop",
                                               "photo_backdrop"]
    assert {r["name"] for r in rows} == {third_set.item(3, i).name for i in (6, 7, 14, 15)}
    assert len(list((out / "images").iterdir())) == 4


@pytest.mark.parametrize(("raw", "seeds"), [(None, PHOTO_SEEDS), ("", ()), ("41", (41,)),
                                            ("41, 42,", (41, 42))])
def test_photo_seeds_from_env(monkeypatch: pytest.MonkeyPatch, raw: str | None,
                              seeds: tuple[int, ...]) -> None:
    if raw is None:
        monkeypatch.delenv("BENCH_PHOTO_SEEDS", raising=False)
    else:
        monkeypatch.setenv("BENCH_PHOTO_SEEDS", raw)
    assert photo_seeds_from_env() == seeds
