"""BENCHMARKS.md is rewritten section by section: hand-written sections survive a rerun."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import bench.__main__ as bench_main
from bench.document import merge_sections, split_sections

ROOT = Path(__file__).resolve().parents[2]
HEADER = "# Benchmarks\n\nintro\n"

FILE = """# Benchmarks

intro

## A

old a
### a detail
more a

## Hand written

kept figures

## B

old b
"""


def test_split_keeps_sub_headings_inside_their_section() -> None:
    preamble, sections = split_sections(FILE)
    assert preamble == "# Benchmarks\n\nintro\n\n"
    assert [head for head, _ in sections] == ["## A", "## Hand written", "## B"]
    assert "### a detail\nmore a\n" in sections[0][1]


def test_a_fresh_section_replaces_its_namesake_in_place_and_keeps_the_rest() -> None:
    out = merge_sections(FILE, ["## B\n\nnew b\n", "## C\n\nnew c\n"], HEADER)
    _, sections = split_sections(out)
    assert [head for head, _ in sections] == ["## A", "## Hand written", "## B", "## C"]
    assert "old b" not in out and "new b" in out
    assert "kept figures" in out and "### a detail" in out
    # a rerun with the same texts changes nothing
    assert merge_sections(out, ["## B\n\nnew b\n", "## C\n\nnew c\n"], HEADER) == out


def test_an_empty_file_starts_with_the_header() -> None:
    out = merge_sections("", ["## A\n\na\n"], HEADER)
    assert out.startswith(HEADER) and out.endswith("## A\n\na\n")


def test_a_text_without_a_heading_is_refused() -> None:
    with pytest.raises(ValueError, match="heading"):
        merge_sections(FILE, ["figures with no heading\n"], HEADER)


def test_rerunning_one_section_keeps_every_other_section_of_the_real_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real BENCHMARKS.md and bench/ files: rerun one (cheap) section's writing step."""
    here = tmp_path / "bench"
    shutil.copytree(ROOT / "bench", here, ignore=shutil.ignore_patterns(".venv*", "__pycache__"))
    shutil.copy(ROOT / "BENCHMARKS.md", tmp_path / "BENCHMARKS.md")
    before_heads = [h for h, _ in split_sections((tmp_path / "BENCHMARKS.md").read_text())[1]]
    monkeypatch.setattr(bench_main, "HERE", here)
    monkeypatch.setattr(bench_main, "ROOT", tmp_path)
    # no section runs (an unknown name is skipped): only the kept files go back in place
    assert bench_main.main(["no_such_section"]) == 0
    after = (tmp_path / "BENCHMARKS.md").read_text()
    after_heads = [h for h, _ in split_sections(after)[1]]
    assert after_heads == before_heads
    for static in bench_main.STATIC:
        if (here / static).exists():
            assert (here / static).read_text().rstrip() in after
