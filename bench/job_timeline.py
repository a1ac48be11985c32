"""One stack job's timeline: where in the job a core sits idle, and why (issue 14, point 2).

The stack of `bench.vs_rembg` (its settings, its 48 JPEGs, its model file, a warm-up job)
runs jobs while a sampler reads every service's CPU time from /proc every SAMPLE_S (utime +
stime, and cutime + cstime so an ingest child counts); the gateway's log gives the job's
events (upload received, ingest done, each stage call's start and end, job finished) and the
client notes when it learned of the end. From the samples: cores busy per 50 ms bin, and the
idle-core seconds (cores − busy, summed) per phase of the job:

- start: upload sent → the first matting call starts (upload, ingest, the first claim);
- lone matting: the first matting call → the first comparison call (one stage only);
- both: the first comparison call → the last matting call's end;
- tail: the last matting call's end → the last comparison call's end (one stage only);
- close: the last comparison call's end → the job finished (the scheduler's close);
- told: the job finished → the client knows (its wait: a poll, or the events stream).

Idle-core seconds are what the machine's cores did not do while the user waited; a quiet
machine makes them the wall-time bubbles. `python -m bench job_timeline`.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.pipeline import run_job
from bench.stack_run import service_label
from bench.vs_rembg import prepare

__all__ = ["Summary", "Timeline", "phase_table", "run", "sample_job", "summary"]

SAMPLE_S = 0.05
JOBS = int(os.environ.get("BENCH_TIMELINE_JOBS", "3"))
_TICKS = os.sysconf("SC_CLK_TCK")
_CALL = re.compile(r"^(\S+ \S+) .*tasks (\d+)\.\.(\d+) (\w+) batch call: (\d+) of (\d+) ok "
                   r"in (\d+) ms")
_ONE = re.compile(r"^(\S+ \S+) .*task (\d+) (\w+) call: \S+ in (\d+) ms")
_FINISHED = re.compile(r"^(\S+ \S+) .*job (\S+) finished: (\S+)")
_INGESTED = re.compile(r"^(\S+ \S+) .*ingest.* job (\S+)")


def _stamp(text: str) -> float:
    """A log line's `asctime` (local time, milliseconds) as a Unix time."""
    return dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _proc_cpu() -> dict[int, tuple[int, float]]:
    """pid → (ppid, CPU seconds: own and waited-for children's) for every process."""
    out: dict[int, tuple[int, float]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        f = text[text.rfind(")") + 2:].split()
        out[int(stat.parent.name)] = (int(f[1]), sum(int(x) for x in f[11:15]) / _TICKS)
    return out


class _Sampler(threading.Thread):
    """CPU seconds per service (`service_label`) of the tree under `root`, every SAMPLE_S.

    A process that exits between two samples takes its last slice with it unless its parent
    waited for it (then the parent's cutime has it): an ingest child is waited for."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._labels: dict[int, str] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            t = time.time()
            procs = _proc_cpu()
            kids: dict[int, list[int]] = {}
            for pid, (ppid, _) in procs.items():
                kids.setdefault(ppid, []).append(pid)
            by: dict[str, float] = {}
            todo = [self.root]
            while todo:
                pid = todo.pop()
                if pid in procs:
                    label = self._labels.get(pid) or self._labels.setdefault(
                        pid, service_label(pid))
                    by[label] = by.get(label, 0.0) + procs[pid][1]
                todo.extend(kids.get(pid, ()))
            self.samples.append((t, by))
            self.stop.wait(SAMPLE_S)


@dataclass
class Timeline:
    """One job: its events (Unix times) and its CPU samples."""

    sent: float
    told: float
    samples: list[tuple[float, dict[str, float]]]
    calls: dict[str, list[tuple[float, float, int]]] = field(default_factory=dict)
    """stage → (start, end, tasks) per stage call, from the gateway's log."""
    finished: float = 0.0
    ingested: float = 0.0

    def busy(self, t0: float, t1: float, label: str | None = None) -> float:
        """CPU seconds between t0 and t1 (all services, or one), from the samples around."""
        def at(t: float) -> float:
            prev = self.samples[0]
            for s in self.samples:
                if s[0] >= t:
                    if s[0] == prev[0]:
                        return self._sum(s[1], label)
                    w = (t - prev[0]) / (s[0] - prev[0])
                    a, b = self._sum(prev[1], label), self._sum(s[1], label)
                    return a + w * (b - a)
                prev = s
            return self._sum(self.samples[-1][1], label)
        return max(0.0, at(t1) - at(t0))

    @staticmethod
    def _sum(by: dict[str, float], label: str | None) -> float:
        if label is None:
            return sum(by.values())
        return sum(v for k, v in by.items() if k.startswith(label))

    def phases(self) -> list[tuple[str, float, float]]:
        """(name, start, end) of the job's phases (module docstring)."""
        m, c = self.calls.get("matting", []), self.calls.get("comparison", [])
        first_m = min(s for s, _, _ in m)
        first_c = min(s for s, _, _ in c)
        last_m = max(e for _, e, _ in m)
        last_c = max(e for _, e, _ in c)
        fin = max(self.finished, last_c)
        return [("start", self.sent, first_m), ("lone matting", first_m, first_c),
                ("both", first_c, last_m), ("tail", last_m, last_c),
                ("close", last_c, fin), ("told", fin, max(self.told, fin))]


def _parse_log(path: Path, t0: float, tl: Timeline) -> None:
    for line in path.read_text(errors="replace").splitlines():
        if (m := _CALL.match(line)) is not None:
            end = _stamp(m[1])
            if end < t0:
                continue
            tl.calls.setdefault(m[4], []).append((end - int(m[7]) / 1000, end, int(m[6])))
        elif (m := _ONE.match(line)) is not None:
            end = _stamp(m[1])
            if end >= t0:
                tl.calls.setdefault(m[3], []).append((end - int(m[4]) / 1000, end, 1))
        elif (m := _FINISHED.match(line)) is not None and _stamp(m[1]) >= t0:
            tl.finished = _stamp(m[1])
        elif (m := _INGESTED.match(line)) is not None and _stamp(m[1]) >= t0:
            tl.ingested = max(tl.ingested, _stamp(m[1]))


def sample_job(url: str, body: bytes, root: int, log: Path) -> Timeline:
    """Run one job through the stack at `url` while sampling the tree under `root`."""
    sampler = _Sampler(root)
    sampler.start()
    time.sleep(3 * SAMPLE_S)
    sent = time.time()
    with httpx.Client(base_url=url, timeout=120) as c:
        run_job(c, body)
    told = time.time()
    time.sleep(3 * SAMPLE_S)
    sampler.stop.set()
    sampler.join()
    time.sleep(0.3)  # the log's last lines
    tl = Timeline(sent, told, sampler.samples)
    _parse_log(log, sent - 0.01, tl)
    return tl


@dataclass
class Summary:
    """One job's figures: per phase (name, seconds, cores busy, idle-core seconds, cores busy
    per service), and the whole job's."""

    wall_s: float
    cpu_s: float
    idle_core_s: float
    load: float
    phases: list[tuple[str, float, float, float, dict[str, float]]]
    sizes: dict[str, list[int]]


SERVICES = ("matting-worker", "comparison-worker", "gateway")


def summary(tl: Timeline, cores: int, load: float) -> Summary:
    """Per phase: seconds, cores busy, idle-core seconds; per service: cores busy."""
    rows = []
    for name, a, b in tl.phases():
        sec = max(0.0, b - a)
        cpu = tl.busy(a, b) if sec > 0 else 0.0
        per = {k: tl.busy(a, b, k) / sec if sec > 0 else 0.0 for k in SERVICES}
        rows.append((name, sec, cpu / sec if sec > 0 else 0.0, max(0.0, cores * sec - cpu),
                     per))
    cpu = tl.busy(tl.sent, tl.told)
    return Summary(wall_s=tl.told - tl.sent, cpu_s=cpu,
                   idle_core_s=cores * (tl.told - tl.sent) - cpu, load=load, phases=rows,
                   sizes={k: [n for _, _, n in sorted(v)] for k, v in tl.calls.items()})


def run() -> str:
    from mattepipe.stack import health_urls, start_stack, stop_stack, wait_healthy

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        bed = prepare(base)
        paths, settings = bed.paths, bed.settings
        stack = start_stack(settings, quiet=True)
        sums = []
        try:
            wait_healthy(health_urls(settings), timeout=600)
            url = f"http://127.0.0.1:{settings.gateway_port}"
            with httpx.Client(base_url=url, timeout=120) as c:
                run_job(c, bed.archive)  # warm-up
            log = settings.data_dir / "logs" / "gateway.out"
            for _ in range(JOBS):
                load = os.getloadavg()[0]
                s = summary(sample_job(url, bed.archive, stack.pid, log), cores, load)
                sums.append(s)
                print(_one(s), flush=True)
        finally:
            stop_stack(stack)
    return _section(sums, len(paths), cores)


def _one(s: Summary) -> str:
    return (f"job {s.wall_s:.2f} s, idle-core {s.idle_core_s:.2f} s, load {s.load:.1f}: "
            + "; ".join(f"{n} {sec:.2f} s busy {b:.2f} idle {i:.2f}"
                        for n, sec, b, i, _ in s.phases) + f"; call sizes {s.sizes}")


def phase_table(sums: list[Summary], n: int) -> list[str]:
    """The phases' medians over `sums` as a Markdown table, and a line for the whole job."""
    def med(i: int, j: int) -> float:
        return statistics.median(float(s.phases[i][j]) for s in sums)  # type: ignore[arg-type]

    def med_per(i: int, k: str) -> float:
        return statistics.median(s.phases[i][4][k] for s in sums)

    lines = [
        "| phase | seconds | cores busy | idle-core s | matting worker | comparison worker "
        "| gateway |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, phase in enumerate(sums[0].phases):
        lines.append(f"| {phase[0]} | {med(i, 1):.2f} | {med(i, 2):.2f} | {med(i, 3):.2f} | "
                     + " | ".join(f"{med_per(i, k):.2f}" for k in SERVICES) + " |")
    wall = statistics.median(s.wall_s for s in sums)
    idle = statistics.median(s.idle_core_s for s in sums)
    cpu = statistics.median(s.cpu_s for s in sums)
    loads = [s.load for s in sums]
    lines += ["", f"Job {wall:.2f} s, CPU {cpu / n * 1000:.0f} ms/image, {cpu / wall:.2f} "
              f"cores busy, {idle:.2f} idle-core s; load average at the jobs' starts "
              f"{min(loads):.1f}–{max(loads):.1f}. Stage calls' sizes, the last job: "
              f"{sums[-1].sizes}.", ""]
    return lines


def _section(sums: list[Summary], n: int, cores: int) -> str:
    lines = [
        "## One stack job's timeline (issue 14, point 2)\n",
        f"`python -m bench job_timeline`: the stack of `bench.vs_rembg` ({n} JPEGs), "
        f"{len(sums)} jobs after a warm-up; medians. Every service's CPU from /proc every "
        f"{SAMPLE_S * 1000:.0f} ms, the events from the gateway's log ({cores} cores; "
        "bench/job_timeline.py says what each phase is). The client waits on the job's "
        "events stream (`bench.pipeline.run_job`).\n",
        *phase_table(sums, n),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
