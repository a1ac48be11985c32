"""bench/download_alone.py's budget: whose CPU it counts (`bench.proctree.cpu_s`), and the
least work of a zip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.download_alone import _busy, _floor
from bench.proctree import cpu_s


def test_a_reaped_child_counts_in_the_children_column_not_in_the_parent() -> None:
    """The zip processes' CPU is read from the gateway's cutime/cstime: a child that burns
    CPU and is waited for shows up there, and not in the parent's own column."""
    own0, kids0 = cpu_s(os.getpid())
    subprocess.run([sys.executable, "-c",
                    "import time\nt = time.process_time()\n"
                    "while time.process_time() - t < 0.3: pass"], check=True)
    own1, kids1 = cpu_s(os.getpid())
    assert kids1 - kids0 >= 0.2
    assert own1 - own0 < 0.2


def test_the_machine_counters_only_grow_and_idle_is_part_of_the_total() -> None:
    idle0, total0 = _busy()
    sum(range(2_000_000))
    idle1, total1 = _busy()
    assert 0 <= idle0 <= total0 and 0 <= idle1 <= total1
    assert total1 >= total0 and idle1 >= idle0


def test_the_least_work_reads_every_file_and_follows_no_symlink(tmp_path: Path) -> None:
    files = []
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(bytes([i]) * (1000 * (i + 1)))
        files.append(str(tmp_path / f"{i}.png"))
    assert _floor(files) >= 0.0
    (tmp_path / "link.png").symlink_to(tmp_path / "0.png")
    with pytest.raises(OSError):  # ELOOP: as the zip, which never follows one
        _floor([*files, str(tmp_path / "link.png")])
    with pytest.raises(FileNotFoundError):
        _floor([str(tmp_path / "gone.png")])


def test_the_read_takes_the_zip_s_member_files_not_the_stored_zip(tmp_path: Path) -> None:
    """The read the download is held to is of the files the zip holds: the stored zip beside
    the report (and a temporary one being written) are not among them."""
    from bench.download_alone import _files
    from gateway.results.stored_zip import STORED_ZIP

    for rel in ("matting_output/j/a.png", "final_results/j/a_compare.jpg",
                "final_results/j/a.json", "reports/j/report.json", f"reports/j/{STORED_ZIP}",
                f"reports/j/.{STORED_ZIP}.1.tmp"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    assert sorted(Path(f).relative_to(tmp_path).as_posix() for f in _files(tmp_path, "j")) == [
        "final_results/j/a_compare.jpg", "matting_output/j/a.png", "reports/j/report.json"]


def test_the_stack_run_script_names_the_stored_zip_as_the_gateway_does() -> None:
    """`bench/stack_run.py` imports nothing of the tree it measures: its copy of the name
    must be the gateway's."""
    from bench.stack_run import STORED_ZIP as written_out
    from gateway.results.stored_zip import STORED_ZIP

    assert written_out == STORED_ZIP
