"""A task's outputs measured when it completes and the zip sized from those records
(`gateway.results.output_sizes`, issue 17's third pass): the same zip, byte for byte, as the
walk that `stat`s every file; a failed task's files sized beside the records; a file that
changed since its task completed stops the zip before any of that task's bytes; a worker
cannot forge the record."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest

from gateway.db.tables import Task
from gateway.db.transitions import OUTPUT_SIZES_KEY, _output_sizes
from gateway.results.output_sizes import measure
from gateway.results.zip_stream import build_zip, task_members, zip_chunks
from gateway.results.zip_tasks import task_candidates
from gateway.results.zipwriter import ZipSizeMismatch
from shared.schemas import StageResult
from shared.storage import Storage


def _job(st: Storage, n: int, output: str = "rgba", models: tuple[str, ...] = (),
         record: bool = True) -> list[Task]:
    """n finished tasks whose outputs the workers left, measured as at completion."""
    tasks = []
    for i in range(n):
        path = f"d{i // 50}/img{i:04d}.jpg"
        for rel, _ in task_candidates("j", output, models, path, ".png"):
            st.objects.put(rel, b"x" * (i % 7 + 1) + rel.encode())
        t = Task(job_id="j", path=path, state="completed")
        if record:
            sizes = measure(st, "j", output, models, path, ".png")
            assert sizes is not None
            t.output_files, t.output_bytes, t.output_name_bytes = sizes
        tasks.append(t)
    return tasks


def _report(tmp_path: Path) -> Path:
    folder = tmp_path / "report-files"
    folder.mkdir()
    for name in ("report.json", "report.csv", "index.html"):
        (folder / name).write_bytes(b"{}" + name.encode())
    return folder


def _bytes(st: Storage, tasks: list[Task], report: Path, output: str = "rgba",
           models: tuple[str, ...] = ()) -> tuple[bytes, int | None]:
    jz = build_zip(st, "j", output, tasks, report=report, models=models)
    return b"".join(zip_chunks(jz)), jz.size


@pytest.mark.parametrize(("output", "models"), [("rgba", ()), ("both", ("a", "b"))])
def test_the_zip_sized_from_records_is_the_walked_zip_byte_for_byte(
        tmp_path: Path, output: str, models: tuple[str, ...]) -> None:
    st = Storage(tmp_path / "data")
    report = _report(tmp_path)
    tasks = _job(st, 120, output, models)
    tasks.append(Task(job_id="j", path="bad.jpg", state="rejected"))
    fast, fast_size = _bytes(st, tasks, report, output, models)
    for t in tasks:  # as rows from before the columns: the two walks, a `stat` each
        t.output_files = t.output_bytes = t.output_name_bytes = None
    walked, walked_size = _bytes(st, tasks, report, output, models)
    assert fast == walked and fast_size == walked_size == len(fast)
    zf = zipfile.ZipFile(io.BytesIO(fast))
    assert zf.testzip() is None
    assert len(zf.namelist()) == sum(t.output_files or 0 for t in _job(
        Storage(tmp_path / "again"), 120, output, models)) + 3


def test_a_failed_task_s_files_are_sized_beside_the_records(tmp_path: Path) -> None:
    st = Storage(tmp_path / "data")
    tasks = _job(st, 10)
    failed = tasks[3]  # its comparison failed for good: the cut-out is there, no record
    failed.state, failed.output_files = "permanently_failed", None
    failed.output_bytes = failed.output_name_bytes = None
    (tmp_path / "data" / st.compare_rel("j", failed.path)).unlink()
    body, size = _bytes(st, tasks, _report(tmp_path))
    assert size == len(body)
    names = zipfile.ZipFile(io.BytesIO(body)).namelist()
    assert "matting_output/d0/img0003.png" in names
    assert "final_results/d0/img0003_compare.jpg" not in names


def test_a_file_that_changed_since_completion_stops_the_zip_before_its_task(
        tmp_path: Path) -> None:
    st = Storage(tmp_path / "data")
    tasks = _job(st, 10)
    sheet = tmp_path / "data" / st.compare_rel("j", tasks[4].path)
    sheet.write_bytes(sheet.read_bytes() + b"!")
    jz = build_zip(st, "j", "rgba", tasks, report=_report(tmp_path))
    sent = b""
    with pytest.raises(ZipSizeMismatch, match="img0004"):
        for piece in zip_chunks(jz, size=1):
            sent += piece
    assert b"img0004" not in sent  # (what went before it may have been sent)
    assert len(sent) < (jz.size or 0)


def test_measure_counts_plain_files_only(tmp_path: Path) -> None:
    st = Storage(tmp_path / "data")
    [t] = _job(st, 1, record=False)
    cut = tmp_path / "data" / st.matting_rel("j", t.path)
    assert measure(st, "j", "rgba", [], t.path, ".png") == (
        2, cut.stat().st_size + (tmp_path / "data" / st.compare_rel("j", t.path)).stat(
        ).st_size, len(b"matting_output/d0/img0000.png") + len(
            b"final_results/d0/img0000_compare.jpg"))
    cut.unlink()
    os.symlink(tmp_path / "data" / st.compare_rel("j", t.path), cut)  # never a member
    assert measure(st, "j", "rgba", [], t.path, ".png")[0] == 1  # type: ignore[index]
    assert [n for _, n in task_members(st, "j", "rgba", [], t).files] == [
        "final_results/d0/img0000_compare.jpg"]


def test_a_worker_cannot_put_sizes_in_the_record() -> None:
    """Only the gateway's own tuple is recorded: a worker's JSON brings lists or worse."""
    forged = StageResult.model_validate_json(
        '{"output": "x", "worker_id": "w", "timings": {"queued": 0, "started": 0, '
        '"finished": 0}, "extra": {"output_sizes": [1, 2, 3]}}')
    assert set(_output_sizes(forged.extra.get(OUTPUT_SIZES_KEY)).values()) == {None}
    assert _output_sizes((1, -2, 3))["output_bytes"] is None
    assert _output_sizes((2, 10, 30)) == {"output_files": 2, "output_bytes": 10,
                                          "output_name_bytes": 30}
