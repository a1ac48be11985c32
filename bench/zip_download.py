"""`python -m bench zip_download`: a finished job's zip in-process, this checkout against a
baseline commit, side by side (`bench/zip_prep.py` run from both trees, alternating).

N tiny finished tasks (BENCH_ZIP_IMAGES, default 5 000: 10 003 members of ~150 bytes): the
time before the first byte (the members found and sized), the sending to the last byte, the
plain read of the same files in the same process (the figure the download is held to:
issue 17 asks for ≥ 0.9× its speed), and the growth of peak RSS. Baseline: BENCH_ZIP_BASELINE
(default 78c1166, the zip writer before the download's per-member work was cut), unpacked
with `git archive` as `bench.scale` does.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.scale import ROOT, _baseline_tree, _run

__all__ = ["run"]

IMAGES = int(os.environ.get("BENCH_ZIP_IMAGES", "5000"))
BASELINE = os.environ.get("BENCH_ZIP_BASELINE", "78c1166")
ROUNDS = int(os.environ.get("BENCH_ZIP_ROUNDS", "2"))


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def run() -> str:
    import bench.scale as scale

    scale.BASELINE = BASELINE
    got: dict[str, list[dict[str, Any]]] = {"base": [], "new": []}
    with tempfile.TemporaryDirectory() as tmp:
        base = _baseline_tree(Path(tmp) / "base")
        for _ in range(ROUNDS):
            got["base"].append(_run(base, "zip_prep.py", str(IMAGES), timeout=3600))
            got["new"].append(_run(ROOT, "zip_prep.py", str(IMAGES), timeout=3600))
    rows = []
    for label, key in (("before the first byte (find + size)", "prep"),
                       ("sending to the last byte", "stream"),
                       ("plain read of the same files", "read")):
        b, n = _median(got["base"], f"{key}_s"), _median(got["new"], f"{key}_s")
        bc, nc = _median(got["base"], f"{key}_cpu_s"), _median(got["new"], f"{key}_cpu_s")
        rows.append(f"| {label} | {b:.2f} s ({bc:.2f} s CPU) | {n:.2f} s ({nc:.2f} s CPU) "
                    f"| ×{bc / nc:.2f} |")
    ratios = []
    for label in ("base", "new"):
        whole = [r["read_cpu_s"] / (r["prep_cpu_s"] + r["stream_cpu_s"]) for r in got[label]]
        ratios.append(statistics.median(whole))
    hwm = [_median(got[k], "hwm_growth_mb") for k in ("base", "new")]
    members = got["new"][0]["members"]
    return "\n".join([
        "## The download in-process (`bench/zip_prep.py`, issue 17)",
        "",
        f"{IMAGES} finished tasks, {members} members of ~150 bytes, `build_zip` + "
        f"`zip_chunks`; baseline commit {BASELINE} from the same script, alternating, "
        f"median of {ROUNDS} runs each; ratios of CPU seconds (user + system: the machine is "
        "shared, so wall times carry the other work), higher is cheaper for this checkout.",
        "",
        f"| figure | {BASELINE} | this checkout | ratio |",
        "|---|---:|---:|---:|",
        *rows,
        f"| download speed / plain read (whole request, CPU) | ×{ratios[0]:.2f} | "
        f"×{ratios[1]:.2f} | target ≥ 0.9 |",
        f"| peak RSS growth (VmHWM) | {hwm[0]:.1f} MB | {hwm[1]:.1f} MB | |",
        "",
    ])
