"""The speed figure of issue 16 point 4 (`bench.quality.speed_ratio`): every image of both
kinds, at the bench's size, the same number of rounds, the kinds taking turns; both clocks
from the same calls."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from bench import third_set
from bench.quality import SPEED_SIZE, speed_ratio
from matting_worker.engines.base import Matte
from matting_worker.engines.classical import ClassicalEngine


class Recording(ClassicalEngine):
    """The real engine, noting the size and route of every image it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[tuple[int, ...], str]] = []

    def predict(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[Matte]:
        out = super().predict(images)
        self.calls += [(im.shape, path) for im, path in zip(images, self.last_paths, strict=True)]
        return out


def test_each_image_runs_every_round_at_the_bench_size_the_kinds_in_turn() -> None:
    photos = [third_set.item(11, i).image for i in (7, 15)]  # cluttered kind
    engine = Recording()
    engine.load()
    wall, cpu = speed_ratio(engine, photos, rounds=2)
    w, h = SPEED_SIZE
    assert {shape for shape, _ in engine.calls} == {(h, w, 3)}
    assert len(engine.calls) == 2 * (len(photos) + 3)
    # One round: photo 0, studio 0, photo 1, studio 1, studio 2, then again.
    routes = [route for _, route in engine.calls]
    assert routes[:5] == ["cluttered", "studio", "cluttered", "studio", "studio"]
    assert routes[5:] == routes[:5]
    for sp in (wall, cpu):
        assert sp.cluttered > 0 and sp.studio > 0
        assert sp.ratio == sp.cluttered / sp.studio
    assert (wall.clock, cpu.clock) == ("wall clock", "CPU")
