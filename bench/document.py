"""BENCHMARKS.md rewritten section by section: a rerun replaces only what it measured.

The file is a header and `## ` sections. Some come from benchmarks (`bench/last_<name>.md`),
some from hand-measured notes kept in `bench/` (`classical_issue16.md`, `gpu.md`, …), and
some were written into BENCHMARKS.md by hand (the container images, the S3 intake, …).
Rebuilding the whole file from the `bench/` files alone dropped the last kind and reordered
the rest, so `make bench` would have erased figures nobody can measure again on this
machine. Here a fresh section replaces the section of the same heading where it stands, a
new heading is appended, and every other section is kept as it is (one blank line
between sections).
"""

from __future__ import annotations

__all__ = ["Section", "merge_sections", "split_sections"]

SECTION_MARK = "## "
"""A line starting with this opens a section (`### ` sub-headings stay inside theirs)."""

Section = tuple[str, str]
"""(heading line, the section's whole text from that line up to the next section)."""


def split_sections(text: str) -> tuple[str, list[Section]]:
    """The text before the first section, and each section with its heading line."""
    preamble: list[str] = []
    sections: list[tuple[str, list[str]]] = []
    for line in text.splitlines(keepends=True):
        if line.startswith(SECTION_MARK):
            sections.append((line.rstrip("\n"), [line]))
        elif sections:
            sections[-1][1].append(line)
        else:
            preamble.append(line)
    return "".join(preamble), [(head, "".join(lines)) for head, lines in sections]


def _ended(text: str) -> str:
    """The text with one blank line after it, so sections never run into each other."""
    return text.rstrip("\n") + "\n\n"


def merge_sections(existing: str, fresh: list[str], header: str) -> str:
    """`existing` with every section of the `fresh` texts put in place of its namesake.

    A fresh section whose heading the file lacks goes at the end, in the order given; a
    heading the file has twice has its first one replaced. `header` starts an empty file.
    """
    preamble, sections = split_sections(existing)
    if not sections and not preamble.strip():
        preamble = header
    where: dict[str, int] = {}
    for i, (head, _) in enumerate(sections):
        where.setdefault(head, i)
    body = [text for _, text in sections]
    for text in fresh:
        lead, parts = split_sections(text)
        if lead.strip():
            raise ValueError(f"a benchmark's text must open with a '{SECTION_MARK}' heading: "
                             f"{lead.strip()[:60]!r}")
        for head, part in parts:
            if head in where:
                body[where[head]] = part
            else:
                where[head] = len(body)
                body.append(part)
    return _ended(preamble) + "".join(_ended(part) for part in body).rstrip("\n") + "\n"
