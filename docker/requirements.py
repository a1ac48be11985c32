"""Prints one container image's pip requirements, read from pyproject.toml.

pyproject.toml stays the one list of dependencies: `light` is `[project] dependencies` (the
gateway and the balancers), `engines` adds the `worker` extra and torch (the workers). On
`cuda`, onnxruntime becomes onnxruntime-gpu (the same module with CUDA kernels; both
installed would overwrite each other). The Dockerfile's first stage runs this, so a change
elsewhere in pyproject.toml leaves the dependency layers cached when the lists are unchanged.

    python3 docker/requirements.py pyproject.toml light
    python3 docker/requirements.py pyproject.toml engines cpu|cuda TORCH_VERSION
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

__all__ = ["requirements"]

_NAME = re.compile(r"^[A-Za-z0-9_.-]+")


def _name(requirement: str) -> str:
    match = _NAME.match(requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return match.group(0).lower().replace("_", "-")


def requirements(pyproject: Path, image: str, accelerator: str = "cpu",
                 torch_version: str = "") -> list[str]:
    """The requirement lines of `image` (`light` or `engines`) for `accelerator`."""
    project = tomllib.loads(pyproject.read_text())["project"]
    lines: list[str] = list(project["dependencies"])
    if image == "light":
        return lines
    if image != "engines" or accelerator not in ("cpu", "cuda") or not torch_version:
        raise ValueError(f"unknown image {image!r} / accelerator {accelerator!r} / torch "
                         f"{torch_version!r}")
    for line in project["optional-dependencies"]["worker"]:
        if accelerator == "cuda" and _name(line) == "onnxruntime":
            line = "onnxruntime-gpu" + line[len("onnxruntime"):]
        lines.append(line)
    lines.append(f"torch=={torch_version}")
    return lines


if __name__ == "__main__":
    print("\n".join(requirements(Path(sys.argv[1]), *sys.argv[2:])))
