"""The names already in a zip, as its first walk needs them to leave a repeated name out.

Ingest refuses an input whose output names another input already has
(`gateway.intake.output_names`), so a job's names are unique; the zip still holds to it for
rows made before that rule. A set of every name would cost a 100 000-image zip ~26 MB for
its 200 003 names (issue 17: the gateway must stay under 300 MB with the download).

The walk reads rows in path order (`gateway.results.pages`), and two names can only be equal
when their tasks' paths share a long prefix: a name is `<stem><tag>` (tags: `.png`,
`.<model>.png`, `.alpha.png`, … under matting_output, `_compare.jpg` under final_results), so
`stem_a + tag_a == stem_b + tag_b` makes one stem a prefix of the other, shorter by at most
the spread of the tags' lengths (`spread`). Every later path that can repeat one of task a's
names starts with `stem_a` less `spread` characters (its `root`), and paths with a given
prefix are consecutive in path order: once the walk reaches a path without that root, task
a's names can never come again and are dropped (`WindowNames`). A single-model job keeps the
names of one or two tasks. The videos, added after every row, are checked against all names:
theirs are known before the walk (`keep`), and any row that uses one is remembered.

The order is checked as the walk goes: a row out of order (a database whose collation does
not sort by code point), or a path that is not plain (`./a.png`: its stem `a` is no prefix of
it) raises `OutOfOrder`, and the walk starts again with every name kept (`ZipNames`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from shared.storage import Storage, model_output_rel

__all__ = ["OutOfOrder", "WindowNames", "ZipNames", "tag_spread"]


class OutOfOrder(Exception):
    """A row `WindowNames` cannot follow: before the previous one in path order, or with a
    path that pathlib rewrites (`./a.png`, whose names are not under its own prefix)."""


class ZipNames:
    """Every name added (a set): a walk in any order."""

    def __init__(self) -> None:
        self._all: set[str] = set()

    def advance(self, path: str) -> None:
        """The walk is at the task of `path`: the names added next are its own."""

    def __contains__(self, name: object) -> bool:
        return name in self._all

    def add(self, name: str) -> None:
        self._all.add(name)

    def update(self, names: Iterable[str]) -> None:
        for name in names:
            self.add(name)


class WindowNames(ZipNames):
    """The names that can still come again in a walk in path order (see the module)."""

    def __init__(self, spread: int, keep: Iterable[str] = ()) -> None:
        super().__init__()
        self.spread = spread
        self._keep = frozenset(keep)
        self._live: dict[str, set[str]] = {}
        """Names added, by the root their task's later repeats must start with."""
        self._root = ""
        self._last = ""

    def advance(self, path: str) -> None:
        if path < self._last:
            raise OutOfOrder(f"{path!r} after {self._last!r}")
        self._last = path
        gone = [root for root in self._live if not path.startswith(root)]
        for root in gone:
            del self._live[root]
        stem = Storage.stem_path(path)
        if not path.startswith(stem):  # `./a.png`: pathlib's name is not the row's prefix
            raise OutOfOrder(f"{path!r} is not a plain path")
        self._root = stem[:max(0, len(stem) - self.spread)]

    def __contains__(self, name: object) -> bool:
        if name in self._all:
            return True
        for names in self._live.values():  # noqa: SIM110 (a loop: no generator per look-up)
            if name in names:
                return True
        return False

    def add(self, name: str) -> None:
        if name in self._keep:  # a video's name: checked after the walk
            self._all.add(name)
        live = self._live.get(self._root)
        if live is None:
            self._live[self._root] = {name}
        else:
            live.add(name)

    @property
    def held(self) -> int:
        """Names held now (tests: the window stays small)."""
        return len(self._all) + sum(len(names) for names in self._live.values())


def tag_spread(output: str, models: Sequence[str], suffix: str) -> int:
    """How much longer one of a task's name tails can be than another in the same folder
    (`WindowNames.spread`): 0 for one cut-out per image, 6 with `.alpha`, more with models.
    The comparison sheets have one tail (`_compare.jpg`) in a folder of their own: no spread."""
    kinds = (False, True) if output == "both" else (False,)
    tails = [len(model_output_rel(f"x{suffix}", model, i, alpha)) - 1
             for i, model in enumerate(list(models) or [""]) for alpha in kinds]
    return max(tails) - min(tails)
