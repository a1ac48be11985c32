"""One output name, one input: inputs whose result files would share a name are refused.

Output names drop the input's extension and add the job's suffixes (docs/DESIGN.md, "Public
API"; `shared.storage.model_output_rel`): `a.jpg` and `a.png` both become `a.png` and
`a_compare.jpg`; with output=both `x.alpha.jpg` becomes `x.alpha.png`, which is also the alpha
file of `x.jpg`; with several models `x.<model>.jpg` collides with `x.jpg`'s second cut-out.
The first input (in archive order) keeps its names; a later one that would write any of the
same files is `rejected` with a reason naming the first. Nothing is renamed, so every output
name can still be read back to its input.
"""

from __future__ import annotations

from collections.abc import Sequence

from shared.formats import OutputMode
from shared.storage import Storage

__all__ = ["OutputNames"]


class OutputNames:
    """The stems (`a/b/photo` for `a/b/photo.jpg`) claimed so far in one job.

    Every output of an input is `<stem><tag>.png` (tag from the job's models and output mode),
    `<stem>_compare.jpg` or `<stem>_metrics.json`; two inputs collide exactly when
    `stem1 + tag1 == stem2 + tag2` for some tags. Only stems are kept (one entry per input, as
    the extractor's own duplicate check), and a new stem is checked with |tags|² look-ups.
    """

    def __init__(self, models: Sequence[str], output: str, keeps_matte: bool = False) -> None:
        # `keeps_matte`: output options shape the cut-out, so the full-size `<x>.alpha.png` is
        # written as with output=both (`shared.finishing.OutputOptions.keeps_matte`). The
        # cut-out's own suffix (.png/.webp/.avif) is one per job: it never tells names apart.
        both = output == OutputMode.BOTH.value or keeps_matte
        kinds = ("", ".alpha") if both else ("",)
        self.tags = sorted(
            {("" if i == 0 else f".{m}") + k for i, m in enumerate(models or [""]) for k in kinds}
        )
        self._stems: dict[str, str] = {}

    def claim(self, path: str) -> str | None:
        """Claim `path`'s output names; None when they are free, else the earlier input's path
        (nothing is claimed then)."""
        stem = Storage.stem_path(path)
        for tag2 in self.tags:
            name = stem + tag2
            for tag1 in self.tags:
                if name.endswith(tag1):
                    first = self._stems.get(name[: len(name) - len(tag1)] if tag1 else name)
                    if first is not None:
                        return first
        self._stems[stem] = path
        return None

    @staticmethod
    def reason(first: str) -> str:
        """What a refused input is told."""
        return (f"output name clash: its results would overwrite those of {first!r} "
                "(output names drop the extension and add .alpha/.<model>)")
