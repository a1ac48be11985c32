"""Orchestration at scale: throughput against the baseline commit, a big job, a million rows.

`python -m bench scale` (100 000 images, a million rows: about an hour on 2 busy cores) or as
part of `make bench` (`python -m bench`: 5 000 images, 100 000 rows). Three parts, each side by
side in one run:

1. Throughput: the same job (BENCH_TPUT_IMAGES tiny PNGs, `model=identity`, the stack as
   `make run` starts it) through this checkout's stack and the baseline commit's
   (BENCH_BASELINE, default 868cdc0, unpacked with `git archive`), interleaved
   base, new, base, new, with the machine's load average beside each run. With
   BENCH_PROFILE_S > 0 each run also carries a py-spy profile of every service.
2. One big job (BENCH_SCALE_IMAGES): gateway RSS sampled throughout, `/status` latency while it
   runs, a task page at depth 0 and 90 % (offset and keyset `after`), the gallery's first page,
   and the download against reading the same files (`bench/stack_run.py --probe`).
3. A million task rows (BENCH_DB_ROWS): `/status`, `/jobs`, the claim, the lease reclaim and
   task pages timed, for both checkouts, with every query's EXPLAIN QUERY PLAN
   (`bench/db_run.py`).

`BENCH_SCALE_PARTS` (default `tput,big,db`) picks the parts, `BENCH_SCALE_PARTS=big` the big
job alone (no baseline checkout then); `BENCH_SCALE_DEADLINE_S` gives the big job a time
budget after which it is probed as it is (its download then a partial one).

Machine load: other processes share the cores; every ratio is of runs made in this one
invocation, interleaved, and the load average is printed beside them.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from statistics import median
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BASELINE = os.environ.get("BENCH_BASELINE", "868cdc0")
TPUT_IMAGES = int(os.environ.get("BENCH_TPUT_IMAGES", "2000"))
SCALE_IMAGES = int(os.environ.get("BENCH_SCALE_IMAGES", "100000"))
DB_ROWS = int(os.environ.get("BENCH_DB_ROWS", "1000000"))
PROFILE_S = float(os.environ.get("BENCH_PROFILE_S", "0"))
SCALE_DEADLINE_S = float(os.environ.get("BENCH_SCALE_DEADLINE_S", "0"))
"""The big job's time budget (seconds after its upload; 0: until it ends): on a machine too
loaded to finish 100 000 images in the time there is, the job is probed as it is then."""
PARTS = set(os.environ.get("BENCH_SCALE_PARTS", "tput,big,db").split(","))
"""Which parts run (`tput`, `big`, `db`): `BENCH_SCALE_PARTS=big` for the big job alone."""
ROUNDS = int(os.environ.get("BENCH_TPUT_ROUNDS", "2"))


def _load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def _baseline_tree(dest: Path) -> Path:
    """The baseline commit's files (git archive: no worktree registered in the repo)."""
    blob = subprocess.run(["git", "-C", str(ROOT), "archive", BASELINE], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tf:
        tf.extractall(dest, filter="data")
    return dest


def _run(tree: Path, script: str, *args: str, timeout: float = 7200) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    r = subprocess.run([sys.executable, str(HERE / script), *args], cwd=tree, env=env,
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{script} {args} in {tree}: {r.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def measure() -> dict[str, Any]:
    res: dict[str, Any] = {"tput": [], "db": {}}
    with tempfile.TemporaryDirectory() as tmp:
        # the baseline checkout only for the parts that compare with it
        base = _baseline_tree(Path(tmp) / "base") if PARTS & {"tput", "db"} else ROOT
        prof = ["--profile", str(PROFILE_S)] if PROFILE_S > 0 else []
        for _ in range(ROUNDS if "tput" in PARTS else 0):
            for name, tree in (("base", base), ("new", ROOT)):
                load = _load()
                r = _run(tree, "stack_run.py", str(TPUT_IMAGES), *prof)
                res["tput"].append({"tree": name, "load": load, **r})
        if "big" in PARTS:
            until = ["--deadline", str(SCALE_DEADLINE_S)] if SCALE_DEADLINE_S > 0 else []
            load0 = _load()
            res["scale"] = _run(ROOT, "stack_run.py", str(SCALE_IMAGES), "--probe", *until)
            res["scale"]["load"] = f"{load0:.1f} at the start, {_load():.1f} at the end"
        for name, tree in (("base", base), ("new", ROOT)) if "db" in PARTS else ():
            res["db"][name] = _run(tree, "db_run.py", str(DB_ROWS))
    return res


def _split(r: dict[str, Any]) -> str:
    """CPU ms per task by process (`stack_run.py`'s `cpu_ms_per_task_by_service`)."""
    by = r.get("cpu_ms_per_task_by_service") or {}
    return ", ".join(f"{k} {v:.2f}" for k, v in sorted(by.items(), key=lambda kv: -kv[1]))


def _tput_table(runs: list[dict[str, Any]]) -> list[str]:
    lines = ["| run | checkout | load avg (1 min) | tasks/s | CPU ms/task | by process | wall s |",
             "|---|---|---:|---:|---:|---|---:|"]
    for i, r in enumerate(runs, 1):
        lines.append(f"| {i} | {r['tree']} | {r['load']:.1f} | {r.get('tasks_per_s', 0):.1f} "
                     f"| {r.get('cpu_ms_per_task', 0):.2f} | {_split(r)} | {r['wall_s']:.1f} |")
    base = [r.get("tasks_per_s", 0.0) for r in runs if r["tree"] == "base"]
    new = [r.get("tasks_per_s", 0.0) for r in runs if r["tree"] == "new"]
    if base and new and median(base) > 0:
        lines.append("")
        lines.append(f"Median tasks/s: baseline {median(base):.1f}, this checkout "
                     f"{median(new):.1f}: **×{median(new) / median(base):.2f}**.")
    cpu_b = [r["cpu_ms_per_task"] for r in runs if r["tree"] == "base" and "cpu_ms_per_task" in r]
    cpu_n = [r["cpu_ms_per_task"] for r in runs if r["tree"] == "new" and "cpu_ms_per_task" in r]
    if cpu_b and cpu_n:
        cores = os.cpu_count() or 1
        allow_b, allow_n = 1000 * cores / median(cpu_b), 1000 * cores / median(cpu_n)
        lines.append(f"Median CPU per task (every process of the stack): baseline "
                     f"{median(cpu_b):.2f} ms, this checkout {median(cpu_n):.2f} ms "
                     f"(×{median(cpu_n) / median(cpu_b):.2f}); {cores} cores / CPU per task: "
                     f"{allow_b:.0f} against {allow_n:.0f} tasks/s, the rate the code allows "
                     "on an idle machine.")
    return lines


def _profile_lines(runs: list[dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    for tree in ("base", "new"):
        prof = next((r["profile"] for r in runs if r["tree"] == tree and r.get("profile")),
                    None)
        if not prof:
            continue
        lines.append(f"\npy-spy, {tree}: own time by function (share of each process's "
                     "samples, idle waits included):\n")
        for proc, p in prof.items():
            top = "; ".join(f"{f} {pct}%" for f, pct in p["top"][:5])
            lines.append(f"- {proc} ({p['samples']} samples): {top}")
    return lines


def _download_kind(s: dict[str, Any]) -> str:
    """Which zip the download was: the finished job's stored zip (ZIP_STORE), after waiting
    for it, or one made as it was sent."""
    if not s.get("download_stored"):
        return "the zip made as it is sent"
    return (f"the stored zip, there {s.get('zip_stored_wait_s', 0):.1f} s after the report; "
            "a download in those seconds is made as it is sent")


def _scale_lines(s: dict[str, Any]) -> list[str]:
    read_rate = s["read_bytes"] / max(1e-9, s["read_s"])
    dl_rate = s["download_bytes"] / max(1e-9, s["download_s"])
    first = s.get("download_first_byte_s", 0.0)
    flow_rate = s["download_bytes"] / max(1e-9, s["download_s"] - first)
    return [
        "| figure | value | target |", "|---|---:|---|",
        f"| images | {s['n']} ({s['completed']} completed, state {s['state']}, "
        f"{s['wall_s']:.0f} s after the upload) | completes |",
        f"| load average (1 min) | {s.get('load', '?')} | |",
        f"| tasks/s (first dispatch → finish) | {s.get('tasks_per_s', 0):.1f} | |",
        f"| gateway RSS, max of {s['rss_samples']} samples (run and probes) "
        f"| {s['rss_max_mb']:.0f} MB | < 300 MB |",
        f"| `/status` p50 / p99 / max while running ({s['status_samples']} polls) "
        f"| {s['status_p50_ms']:.1f} / {s['status_p99_ms']:.1f} / "
        f"{s.get('status_max_ms', 0):.0f} ms | p99 < 50 ms |",
        f"| task page at depth 0 | {s['page0_ms']:.1f} ms | |",
        f"| task page at depth 90 % by `offset` | {s['page_deep_offset_ms']:.1f} ms | |",
        f"| task page at depth 90 % by `after` | {s.get('page_deep_after_ms', 0):.1f} ms "
        f"(×{s.get('page_deep_after_ms', 0) / max(1e-9, s['page0_ms']):.2f} of depth 0) "
        "| constant |",
        f"| gallery's first page (`/jobs/{{id}}/gallery`) | {s['gallery_ms']:.0f} ms | < 2 s |",
        f"| download {s['download_bytes'] / 1e6:.1f} MB, request to last byte "
        f"| {s['download_s']:.1f} s, {dl_rate / 1e6:.1f} MB/s | |",
        f"| … of which to the first byte (the zip's preparation) | {first:.1f} s | |",
        f"| reading the same {s['read_files']} files | {s['read_s']:.1f} s, "
        f"{read_rate / 1e6:.1f} MB/s | |",
        f"| download / file read ({_download_kind(s)}) "
        f"| **×{dl_rate / max(1e-9, read_rate):.2f}** | ≥ 0.9 |",
        f"| download after its first byte / file read "
        f"| ×{flow_rate / max(1e-9, read_rate):.2f} | |",
    ]


def _db_lines(db: dict[str, Any]) -> list[str]:
    new, base = db.get("new"), db.get("base")
    if not new:
        return []
    bops = {o["op"]: o for o in (base or {}).get("ops", [])}
    queued = new.get("queued")
    big = f", and one of {queued} tasks all queued" if queued else ""
    lines = [f"{new['rows']} task rows over {203 if queued else 202} jobs (200 finished, 2 "
             f"running{big}); no ANALYZE, as the gateway runs.\n",
             "| operation | baseline ms | this checkout ms | ratio |", "|---|---:|---:|---:|"]
    for o in new["ops"]:
        b = bops.get(o["op"])
        bt = f"{b['best_ms']:.1f}" if b else "—"
        ratio = f"×{o['best_ms'] / b['best_ms']:.3f}" if b and b["best_ms"] else "—"
        lines.append(f"| {o['op']} | {bt} | {o['best_ms']:.1f} | {ratio} |")
    lines.append("\nQuery plans (this checkout; EXPLAIN QUERY PLAN of every statement each "
                 "operation ran):\n\n```")
    for o in new["ops"]:
        lines.append(f"-- {o['op']}")
        for q in o["queries"]:
            lines.append(f"{q['sql'][:110]}")
            lines.extend(f"    {p}" for p in q["plan"])
    lines.append("```")
    return lines


def render(res: dict[str, Any]) -> str:
    parts = ["## Orchestration at scale (`python -m bench scale`)\n",
             f"Machine: {os.cpu_count()} cores shared with other work; load averages are "
             "beside each run. Baseline: commit " + BASELINE + ", run from the same script.\n",
             f"### Throughput, {TPUT_IMAGES} images of 32×32 px, `identity`, both stages\n"]
    parts += _tput_table(res["tput"])
    parts += _profile_lines(res["tput"])
    if res.get("scale"):
        parts.append(f"\n### One job of {res['scale']['n']} images\n")
        parts += _scale_lines(res["scale"])
    if res.get("db"):
        parts.append("\n### A million task rows\n")
        parts += _db_lines(res["db"])
    if res.get("notes"):
        parts.append("\n" + res["notes"])
    return "\n".join(parts) + "\n"


def run() -> str:
    saved = os.environ.get("BENCH_SCALE_FROM")
    res = json.loads(Path(saved).read_text()) if saved else measure()
    return render(res)


if __name__ == "__main__":
    print(run())
