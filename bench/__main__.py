"""`make bench`: run every benchmark and put their sections into BENCHMARKS.md.

Each section is also kept as `bench/last_<name>.md`, so one benchmark can be rerun alone
(`python -m bench quality`) without losing the others' figures.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
import time
from pathlib import Path

from bench.document import merge_sections

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SECTIONS = [
    "quality", "studio_sweep", "pipeline", "upload_memory", "upload_speed", "status_load",
    "report_memory", "scale", "cache", "db_postgres", "vs_rembg", "png_encode", "objects",
    "zip_download", "download_alone",
]
SMALL_SCALE = {"BENCH_SCALE_IMAGES": "5000", "BENCH_DB_ROWS": "100000"}
"""`make bench` (every section) runs the scale section small; `python -m bench scale` runs
it at 100 000 images and a million rows."""

STATIC = ("classical_issue16.md", "gpu.md", "scale_read_paths.md", "throughput_issue17.md",
          "status_p99_issue17.md", "orch4_issue17.md")
"""Hand-measured sections kept as files in bench/: put back in place on every run."""

HEADER = """# Benchmarks

Made by `make bench` (`python -m bench [section …]`); every figure is a ratio against a
baseline measured side by side in the same run, on the machine named in each section.
"""


def main(argv: list[str]) -> int:
    wanted = argv or SECTIONS
    ran: list[str] = []
    if not argv:
        for k, v in SMALL_SCALE.items():
            os.environ.setdefault(k, v)
    for name in wanted:
        try:
            mod = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as exc:
            print(f"skip {name}: {exc}", file=sys.stderr)
            continue
        t0 = time.time()
        print(f"== {name} ...", flush=True)
        text = mod.run()
        when = time.strftime("%Y-%m-%d %H:%M")
        stamp = f"\n_{platform.node()} · {when} · {time.time() - t0:.0f} s_\n"
        (HERE / f"last_{name}.md").write_text(text.rstrip() + "\n" + stamp)
        print(text)
        ran.append(name)
    # hand-measured sections (kept in bench/) go back in place too; every section no run
    # measured stays as BENCHMARKS.md has it (bench/document.py)
    fresh = [(HERE / f"last_{name}.md").read_text() for name in ran]
    fresh += [(HERE / static).read_text() for static in STATIC if (HERE / static).exists()]
    target = ROOT / "BENCHMARKS.md"
    existing = target.read_text() if target.exists() else ""
    target.write_text(merge_sections(existing, fresh, HEADER))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
