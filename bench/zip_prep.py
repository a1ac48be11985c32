"""A job's zip in-process, run from any checkout: preparation (before the first byte), the
streaming, and the memory they take, for N images of tiny outputs.

`python bench/zip_prep.py N [BYTES]` with PYTHONPATH set to the checkout under test lays out
N finished tasks (a cut-out and sheet of BYTES each, 150 unless given:
`bench/stack_run.py`'s 32×32 images leave ~5 300 on average, where the bytes' own costs
show; 1 000 to a folder, as the workers leave them) in a temporary DATA_DIR, then times
`build_zip` (the members found and sized: what the download does before its first byte; with
the recorded sizes of a checkout that has them, measured as the gateway does when a task
completes, outside the timing) and the reading of `zip_chunks` to the end, and prints one
JSON line: seconds, bytes, the file-read time of the same members, and the growth of the
process's peak RSS (VmHWM) over the laid-out state. It imports nothing from `bench`, so the
same file measures the baseline commit side by side with this one (issue 17's zip writer).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path


def _hwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run(n: int, member_bytes: int = 150) -> dict[str, float]:
    from gateway.db.tables import Task
    from gateway.results.zip_stream import build_zip, zip_chunks
    from shared.storage import Storage

    with tempfile.TemporaryDirectory() as tmp:
        st = Storage(Path(tmp))
        tasks = []
        blob = b"\x89PNG" + os.urandom(max(0, member_bytes - 4))
        for i in range(n):
            path = f"f{i // 1000:04d}/image_{i:07d}.png"
            for rel in (st.matting_rel("j", path), st.compare_rel("j", path)):
                target = Path(tmp) / rel  # as a worker leaves it (no temporary and rename
                target.parent.mkdir(parents=True, exist_ok=True)  # here: faster to lay out)
                target.write_bytes(blob)
            task = Task(job_id="j", path=path, state="completed")
            if hasattr(Task, "output_files"):  # sizes recorded at completion (issue 17, 3rd)
                from gateway.results.output_sizes import measure
                sizes = measure(st, "j", "rgba", [], path, ".png")
                assert sizes is not None
                task.output_files, task.output_bytes, task.output_name_bytes = sizes
            tasks.append(task)
        report = Path(tmp) / "report"
        report.mkdir()
        for name in ("report.json", "report.csv", "index.html"):
            (report / name).write_bytes(b"{}")
        files = [p for p in Path(tmp).rglob("*") if p.is_file()]
        t0, c0 = time.perf_counter(), time.process_time()
        for p in files:
            p.read_bytes()
        read_s, read_cpu_s = time.perf_counter() - t0, time.process_time() - c0
        base = _hwm_mb()
        t0, c0 = time.perf_counter(), time.process_time()
        jz = build_zip(st, "j", "rgba", tasks, report=report)
        prep_s, prep_cpu_s = time.perf_counter() - t0, time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        got = sum(len(c) for c in zip_chunks(jz))
        stream_s, stream_cpu_s = time.perf_counter() - t0, time.process_time() - c0
        assert got == jz.size, (got, jz.size)
        # CPU seconds (user + system) as well: on a shared, loaded machine they are what the
        # work cost, whatever else ran meanwhile
        return {"images": n, "members": jz.members, "bytes": got, "prep_s": prep_s,
                "stream_s": stream_s, "read_s": read_s, "files": len(files),
                "prep_cpu_s": prep_cpu_s, "stream_cpu_s": stream_cpu_s,
                "read_cpu_s": read_cpu_s, "hwm_growth_mb": _hwm_mb() - base}


if __name__ == "__main__":
    os.environ.setdefault("DATA_DIR", tempfile.gettempdir())
    print(json.dumps(run(int(sys.argv[1]), *(int(a) for a in sys.argv[2:3]))), flush=True)
