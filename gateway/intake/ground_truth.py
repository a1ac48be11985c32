"""Pairing ground-truth mattes in an upload's top-level `gt/` folder with their images.

`gt/<path>.<ext>` belongs to the image whose path without extension is `<path>`, either in
full or below the image's first folder (`photos/a/x.jpg` ↔ `gt/a/x.png`). Those are strong
matches: every image that fits gets the matte. A shorter tail (`gt/x.png` for
`photos/a/x.jpg`) is a weak match, taken only when exactly one image claims it, so a stray
`x.png` never scores a dozen unrelated `x.jpg`s.

The index is built from the gt paths only and is fed image paths in two passes (`claim`,
then `resolve`), so a caller can stream a million task rows through it without holding them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import PurePosixPath

__all__ = ["GtIndex", "gt_key", "is_gt_path", "match_gt"]

_PREFERRED = (".png", ".tif", ".tiff", ".bmp", ".webp", ".jpg", ".jpeg")


def is_gt_path(path: str) -> bool:
    """Top-level `gt/` (any case) holds the mattes; a file named `gt` is an ordinary member."""
    head, sep, _ = path.partition("/")
    return bool(sep) and head.lower() == "gt"


def _strip_ext(parts: list[str]) -> list[str]:
    last = PurePosixPath(parts[-1])
    return [*parts[:-1], last.stem if last.suffix else last.name]


def gt_key(path: str) -> str:
    """`gt/a/b/x.png` → `a/b/x`: the image path (without extension) this matte is for."""
    parts = path.split("/")
    if is_gt_path(path):
        parts = parts[1:]
    return "/".join(_strip_ext(parts))


def _preference(path: str) -> tuple[int, str]:
    suffix = PurePosixPath(path).suffix.lower()
    rank = _PREFERRED.index(suffix) if suffix in _PREFERRED else len(_PREFERRED)
    return rank, path


class GtIndex:
    """gt key → gt path, plus the claim counts that decide weak matches."""

    def __init__(self, gt_paths: Iterable[str]) -> None:
        self._by_key: dict[str, str] = {}
        for path in sorted(gt_paths, key=_preference):
            self._by_key.setdefault(gt_key(path), path)
        self._weak: Counter[str] = Counter()
        self._strong: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self._by_key)

    def __len__(self) -> int:
        return len(self._by_key)

    def _best(self, image_path: str) -> tuple[str, bool] | None:
        parts = _strip_ext(image_path.split("/"))
        for i in range(len(parts)):
            key = "/".join(parts[i:])
            if key in self._by_key:
                return key, i <= 1
        return None

    def claim(self, image_path: str) -> None:
        """First pass: note which key each image would take."""
        best = self._best(image_path)
        if best is None:
            return
        key, strong = best
        if strong:
            self._strong.add(key)
        else:
            self._weak[key] += 1

    def resolve(self, image_path: str) -> str | None:
        """Second pass: the gt path for this image, or None."""
        best = self._best(image_path)
        if best is None:
            return None
        key, strong = best
        if strong or (self._weak[key] == 1 and key not in self._strong):
            return self._by_key[key]
        return None


def match_gt(image_paths: Iterable[str], gt_paths: Iterable[str]) -> dict[str, str]:
    """Image path → gt path for every image that has a matte (in-memory convenience)."""
    index = GtIndex(gt_paths)
    if not index:
        return {}
    images = list(image_paths)
    for path in images:
        index.claim(path)
    return {path: gt for path in images if (gt := index.resolve(path)) is not None}
