"""`rembg p -m MODEL IN OUT` without rembg's CLI extra (gradio, aiohttp …): the same session and
`remove` call per file, PNG bytes written. Runs in bench/.venv-rembg's Python, never imported
by the project.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rembg import new_session, remove


def main(src: Path, dst: Path, model: str) -> int:
    session = new_session(model)
    for each in sorted(p for p in src.rglob("*") if p.is_file()):
        out = (dst / each.relative_to(src)).with_suffix(".png")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(remove(each.read_bytes(), session=session))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]))
