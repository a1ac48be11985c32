"""A big finished job's zip made by worker processes (`gateway.results.zip_processes`): the
same members, byte for byte, at the same offsets as the zip made in one thread, whatever the
number of processes and parts; the same checks (a file changed since its task completed stops
the zip short of its length); no process outlives its zip, finished, failed or abandoned."""

from __future__ import annotations

import io
import os
import signal
import socket
import threading
import zipfile
from pathlib import Path

import pytest

from gateway.db.repo import OutputRow
from gateway.db.tables import Task
from gateway.errors import ClientGone
from gateway.results import zip_processes
from gateway.results.output_sizes import measure
from gateway.results.zip_processes import Job, ProcessZip, ZipStopped, process_count
from gateway.results.zip_stream import build_zip, zip_chunks
from gateway.results.zip_tasks import task_candidates
from gateway.results.zipwriter import ZipSizeMismatch, ZipSizer
from shared.storage import Storage
from tests.support.processes import living_children

REPORT = ("report.json", "report.csv", "index.html")


def _job(st: Storage, n: int, output: str = "rgba", models: tuple[str, ...] = ()
         ) -> list[Task]:
    """n finished tasks whose outputs the workers left, measured as at completion; one
    rejected, and one failed without outputs (recorded as none)."""
    tasks = []
    for i in range(n):
        path = f"d{i // 50}/img{i:04d}.jpg"
        t = Task(job_id="j", path=path, state="completed")
        if i == 7:
            t.state = "rejected"
        elif i != 11:  # a task that failed before its cut-out was written
            for rel, _ in task_candidates("j", output, models, path, ".png"):
                st.objects.put(rel, b"x" * (i % 9 + 1) * (i % 5 + 1) + rel.encode())
        if t.state != "rejected":
            sizes = measure(st, "j", output, models, path, ".png")
            assert sizes is not None
            t.output_files, t.output_bytes, t.output_name_bytes = sizes
        tasks.append(t)
    return tasks


def _report(tmp_path: Path) -> list[tuple[Path, str]]:
    folder = tmp_path / "report-files"
    folder.mkdir()
    for name in REPORT:
        (folder / name).write_bytes(b"{}" + name.encode())
    return [(folder / name, name) for name in REPORT]


def _made(st: Storage, tasks: list[Task], report: list[tuple[Path, str]], processes: int,
          output: str = "rgba", models: tuple[str, ...] = ()) -> tuple[ProcessZip, int]:
    """The processes' zip of `tasks` (not started yet), and its announced length."""
    sizer = ZipSizer()
    for t in tasks:
        if t.state != "rejected":
            assert t.output_files is not None and t.output_bytes is not None
            assert t.output_name_bytes is not None
            sizer.add_many(t.output_files, t.output_bytes, t.output_name_bytes)
    for path, name in report:
        sizer.add(name, path.stat().st_size)
    rows = [OutputRow(t.path, t.state, i, t.output_files, t.output_bytes, t.output_name_bytes)
            for i, t in enumerate(tasks)]
    made = ProcessZip(Job(st.root, "j", output, models, ".png"), rows, report, sizer.count,
                      sizer.central, sizer.offset, processes)
    return made, sizer.size


def _in_one_thread(st: Storage, tasks: list[Task], report: list[tuple[Path, str]],
                   output: str = "rgba", models: tuple[str, ...] = ()) -> bytes:
    return b"".join(zip_chunks(build_zip(st, "j", output, tasks, report=report[0][0].parent,
                                         models=models)))


def _our_children() -> list[int]:
    """This process's living zip processes."""
    return living_children(os.getpid(), zip_processes.MODULE)


def _entries(body: bytes) -> list[tuple[str, int, int, int, bytes]]:
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.testzip() is None
        return sorted((i.filename, i.header_offset, i.CRC, i.file_size, zf.read(i))
                      for i in zf.infolist())


@pytest.mark.parametrize(("processes", "part_bytes", "output", "models"), [
    (2, 512 * 1024, "rgba", ()),          # the whole job one part
    (3, 1500, "rgba", ()),                # many parts, three processes in turn
    (2, 1, "both", ("a", "b")),           # a part per task, four members a task
])
def test_the_processes_zip_holds_the_one_thread_zip_s_members_at_its_offsets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, processes: int, part_bytes: int,
        output: str, models: tuple[str, ...]) -> None:
    monkeypatch.setattr(zip_processes, "PART_BYTES", part_bytes)
    st = Storage(tmp_path / "data")
    tasks = _job(st, 160, output, models)
    report = _report(tmp_path)
    made, size = _made(st, tasks, report, processes, output, models)
    body, end = b"".join(made.pieces()), made.end
    one = _in_one_thread(st, tasks, report, output, models)
    assert len(body) == size == len(one)
    assert body[:end] == one[:end]  # the members: the same bytes at the same offsets
    assert _entries(body) == _entries(one)  # the directory: the same records, in turns
    assert not _our_children()


def test_a_file_changed_since_its_task_completed_stops_the_zip_short(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zip_processes, "PART_BYTES", 2000)
    st = Storage(tmp_path / "data")
    tasks = _job(st, 120)
    sheet = tmp_path / "data" / st.compare_rel("j", tasks[90].path)
    sheet.write_bytes(sheet.read_bytes() + b"!")
    made, size = _made(st, tasks, _report(tmp_path), 2)
    stream = made.pieces()
    sent = b""
    with pytest.raises(ZipSizeMismatch, match="img0090"):
        for piece in stream:
            sent += piece
    assert b"img0090" not in sent and len(sent) < size
    assert not _our_children()


def test_a_report_file_gone_stops_the_zip_before_its_directory(tmp_path: Path) -> None:
    st = Storage(tmp_path / "data")
    tasks = _job(st, 30)
    report = _report(tmp_path)
    made, _ = _made(st, tasks, report, 2)
    stream, end = made.pieces(), made.end
    report[1][0].unlink()
    sent = b""
    with pytest.raises(FileNotFoundError, match=r"report\.csv"):
        for piece in stream:
            sent += piece
    assert len(sent) < end
    assert not _our_children()


def test_an_abandoned_zip_stops_its_processes(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zip_processes, "PART_BYTES", 1000)
    st = Storage(tmp_path / "data")
    stream = _made(st, _job(st, 200), _report(tmp_path), 2)[0].pieces()
    next(stream)
    assert len(_our_children()) == 2
    stream.close()  # the client went away: the download's generator is closed
    assert not _our_children()


def test_a_process_killed_mid_zip_stops_the_zip_with_its_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zip_processes, "PART_BYTES", 1000)
    st = Storage(tmp_path / "data")
    made, size = _made(st, _job(st, 200), _report(tmp_path), 2)
    stream = made.pieces()
    sent = next(stream)
    for pid in _our_children():
        os.kill(pid, signal.SIGKILL)
    with pytest.raises(ZipSizeMismatch, match="a zip process stopped"):
        for piece in stream:
            sent += piece
    assert len(sent) < size
    assert not _our_children()


def test_a_process_refuses_what_is_not_a_part(tmp_path: Path) -> None:
    """The protocol's input is the gateway's own, but a malformed line still ends the
    process with its reason, never a zip of something else."""
    import subprocess
    import sys

    from shared.children import child_env
    job = Job(tmp_path, "j", "rgba", (), ".png").line()
    for bad in (b'{"start": 0, "end": 10}\n', b"not json\n",
                b'{"start": 0, "end": 10, "rows": [["../../etc/passwd", "completed", 1, 5]]}\n'):
        r = subprocess.run([sys.executable, "-m", zip_processes.MODULE, str(os.getpid())],
                           input=job + bad, capture_output=True, env=child_env(), timeout=60)
        assert r.returncode == 1 and r.stdout == b"" and r.stderr.strip()


def _spliced(made: ProcessZip, stop: threading.Event | None = None,
             read_at_most: int | None = None) -> tuple[bytes, int | BaseException]:
    """`made` spliced into one end of a socket pair by a thread, as a download's; what the
    other end received (at most `read_at_most` bytes, then it is closed), and what the
    splice returned or raised."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    outcome: list[int | BaseException] = []

    def run() -> None:
        try:
            outcome.append(made.splice_into(ours.fileno(), stop or threading.Event()))
        except BaseException as exc:
            outcome.append(exc)
        finally:
            ours.close()

    thread = threading.Thread(target=run)
    thread.start()
    got = bytearray()
    with theirs:
        while read_at_most is None or len(got) < read_at_most:
            piece = theirs.recv(1 << 16)
            if not piece:
                break
            got += piece
    thread.join(60)
    assert not thread.is_alive()
    return bytes(got), outcome[0]


def test_the_zip_spliced_into_a_socket_is_the_zip_read_as_pieces(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zip_processes, "PART_BYTES", 3000)
    st = Storage(tmp_path / "data")
    tasks = _job(st, 200)
    report = _report(tmp_path)
    made, size = _made(st, tasks, report, 2)
    got, sent = _spliced(made)
    assert sent == len(got) == size
    assert got == b"".join(_made(st, tasks, report, 2)[0].pieces())
    assert _entries(got) == _entries(_in_one_thread(st, tasks, report))
    assert not _our_children()


def test_a_spliced_zip_stops_short_at_a_changed_file_a_client_gone_or_a_stop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zip_processes, "PART_BYTES", 1000)
    monkeypatch.setattr(zip_processes, "STOP_CHECK_S", 0.05)
    st = Storage(tmp_path / "data")
    tasks = _job(st, 200)
    report = _report(tmp_path)
    sheet = tmp_path / "data" / st.compare_rel("j", tasks[150].path)
    body = sheet.read_bytes()
    sheet.write_bytes(body + b"!")
    got, outcome = _spliced(_made(st, tasks, report, 2)[0])
    assert isinstance(outcome, ZipSizeMismatch) and "img0150" in str(outcome)
    assert b"img0150" not in got
    sheet.write_bytes(body)
    made, size = _made(st, tasks, report, 2)
    got, outcome = _spliced(made, read_at_most=5000)  # the client reads a little, and goes
    assert isinstance(outcome, ClientGone) and len(got) < size
    stop = threading.Event()
    stop.set()  # the download cancelled: the thread stops before its next write
    got, outcome = _spliced(_made(st, tasks, report, 2)[0], stop)
    assert isinstance(outcome, ZipStopped) and got == b""
    assert not _our_children()


def test_zip_processes_0_is_one_per_usable_cpu() -> None:
    assert process_count(0) == len(os.sched_getaffinity(0))
    assert process_count(3) == 3
