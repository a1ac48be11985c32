"""The gateway process stays light: building its app loads no engine, no OpenCV, no runtime
of a learned model (it checks `model=` against `shared.catalogue`, pure data)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HEAVY = ("cv2", "torch", "onnxruntime", "ai_edge_litert", "scipy", "pymatting",
         "matting_worker", "comparison_worker")

SCRIPT = """
import json, sys
from pathlib import Path
from shared.settings import Settings
from gateway.app import create_app
data = Path(sys.argv[1])
create_app(Settings(_env_file=None, data_dir=data, database_url="", models_dir=data / "models"))
print(json.dumps(sorted(sys.modules)))
"""


def test_creating_the_gateway_app_imports_no_engine(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)}
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "data")], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    heavy = [m for m in loaded if m.split(".")[0] in HEAVY]
    assert heavy == []
