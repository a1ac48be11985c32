"""Model downloads against a real HTTP mirror on 127.0.0.1: checked, resumed, atomic, once."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.model_fetch import ModelDownloadError, fetch_model, verify_file
from shared.zoo import load_zoo
from tests.support.model_server import ModelMirror, serving_models, zoo_file
from tests.support.servers import ROOT

DATA = os.urandom(700_000)
"""A 'model': what matters here is the bytes and their hash."""
WRONG_SHA = "sha256:" + "0" * 64


def _zoo(tmp_path: Path, base: str, hashes: dict[str, str] | None = None) -> Path:
    return zoo_file(tmp_path / "zoo.json", base, {"tiny.onnx": DATA}, hashes)


def test_download_lands_checked_and_atomically(tmp_path: Path) -> None:
    mirror = ModelMirror({"tiny.onnx": DATA})
    with serving_models(mirror) as base:
        model = load_zoo(_zoo(tmp_path, base)).get("tiny")
        assert model is not None
        seen: list[int] = []
        path = fetch_model(model, tmp_path / "models", progress=lambda n, _t: seen.append(n))
    assert path == tmp_path / "models" / "tiny.onnx"
    assert path.read_bytes() == DATA
    assert seen[-1] == len(DATA)
    assert verify_file(model, path) is None
    left = sorted(p.name for p in path.parent.iterdir())
    assert left == [".tiny.onnx.lock", "tiny.onnx"]  # no .part left behind


def test_present_file_is_not_downloaded_again(tmp_path: Path) -> None:
    mirror = ModelMirror({"tiny.onnx": DATA})
    with serving_models(mirror) as base:
        model = load_zoo(_zoo(tmp_path, base)).get("tiny")
        assert model is not None
        fetch_model(model, tmp_path)
        fetch_model(model, tmp_path)
        assert mirror.full_gets("tiny.onnx") == 1
        fetch_model(model, tmp_path, force=True)
        assert mirror.full_gets("tiny.onnx") == 2


def test_hash_mismatch_deletes_and_says_so(tmp_path: Path) -> None:
    mirror = ModelMirror({"tiny.onnx": DATA})
    with serving_models(mirror) as base:
        model = load_zoo(_zoo(tmp_path, base, {"tiny.onnx": WRONG_SHA})).get("tiny")
        assert model is not None
        with pytest.raises(ModelDownloadError) as err:
            fetch_model(model, tmp_path / "models")
    msg = str(err.value)
    assert "model tiny" in msg and "does not match its published sha256" in msg
    assert "deleted" in msg and not err.value.retryable
    assert [p.name for p in (tmp_path / "models").iterdir()] == [".tiny.onnx.lock"]


def test_md5_as_rembg_publishes_it(tmp_path: Path) -> None:
    md5 = "md5:" + hashlib.md5(DATA, usedforsecurity=False).hexdigest()
    with serving_models(ModelMirror({"tiny.onnx": DATA})) as base:
        model = load_zoo(_zoo(tmp_path, base, {"tiny.onnx": md5})).get("tiny")
        assert model is not None
        assert fetch_model(model, tmp_path).read_bytes() == DATA


def test_a_cut_connection_is_resumed_with_range(tmp_path: Path) -> None:
    third = len(DATA) // 3
    mirror = ModelMirror({"tiny.onnx": DATA}, cut_after=third, cuts=2)
    with serving_models(mirror) as base:
        model = load_zoo(_zoo(tmp_path, base)).get("tiny")
        assert model is not None
        path = fetch_model(model, tmp_path)
    assert path.read_bytes() == DATA
    ranges = [r for _, r in mirror.requests]
    assert ranges[0] == "" and len(ranges) == 3
    assert ranges[1] == f"bytes={third}-"  # went on from what the first connection gave
    assert ranges[2] == f"bytes={2 * third}-"


def test_a_part_left_by_a_crash_is_resumed_by_the_next_pull(tmp_path: Path) -> None:
    mirror = ModelMirror({"tiny.onnx": DATA}, cut_after=300_000, cuts=10)
    with serving_models(mirror) as base:
        model = load_zoo(_zoo(tmp_path, base)).get("tiny")
        assert model is not None
        with pytest.raises(ModelDownloadError, match="failed 1 times") as err:
            fetch_model(model, tmp_path, attempts=1)
        assert err.value.retryable
        part = tmp_path / ".tiny.onnx.part"
        assert part.stat().st_size == 300_000 and not (tmp_path / "tiny.onnx").exists()
        mirror.cuts = 0
        assert fetch_model(model, tmp_path).read_bytes() == DATA
    assert mirror.requests[-1][1] == "bytes=300000-"


def test_a_server_without_range_starts_over(tmp_path: Path) -> None:
    (tmp_path / ".tiny.onnx.part").write_bytes(b"stale bytes of an older download")

    class NoRange(ModelMirror):
        async def __call__(self, scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
            if scope["type"] == "http":
                scope = {**scope, "headers": [h for h in scope["headers"] if h[0] != b"range"]}
            await super().__call__(scope, receive, send)

    with serving_models(NoRange({"tiny.onnx": DATA})) as base:
        model = load_zoo(_zoo(tmp_path, base)).get("tiny")
        assert model is not None
        assert fetch_model(model, tmp_path).read_bytes() == DATA


def test_missing_at_the_source_is_a_clear_error(tmp_path: Path) -> None:
    with serving_models(ModelMirror({})) as base:
        model = load_zoo(_zoo(tmp_path, base)).get("tiny")
        assert model is not None
        with pytest.raises(ModelDownloadError, match=r"model tiny: .* answered HTTP 404"):
            fetch_model(model, tmp_path)


def test_an_oversized_model_is_refused(tmp_path: Path) -> None:
    with serving_models(ModelMirror({"tiny.onnx": DATA})) as base:
        model = load_zoo(_zoo(tmp_path, base)).get("tiny")
        assert model is not None
        with pytest.raises(ModelDownloadError, match="more than the 1000 a model may be"):
            fetch_model(model, tmp_path, max_bytes=1000)
    assert not (tmp_path / ".tiny.onnx.part").exists()


_RACER = """
import sys
from pathlib import Path
from shared.model_fetch import fetch_model
from shared.zoo import load_zoo
model = load_zoo(Path(sys.argv[1])).get("tiny")
print(fetch_model(model, Path(sys.argv[2])))
"""


def test_concurrent_processes_download_once(tmp_path: Path) -> None:
    """Four real processes want the same missing model: one GET, four good answers."""
    mirror = ModelMirror({"tiny.onnx": DATA}, chunk=50_000, delay_s=0.05)  # ~0.7 s to send
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with serving_models(mirror) as base:
        zoo = _zoo(tmp_path, base)
        procs = [subprocess.Popen([sys.executable, "-c", _RACER, str(zoo), str(tmp_path / "m")],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(4)]
        outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outs
    assert {o.strip() for o, _ in outs} == {str(tmp_path / "m" / "tiny.onnx")}
    assert mirror.full_gets("tiny.onnx") == 1
    assert len(mirror.requests) == 1
    assert (tmp_path / "m" / "tiny.onnx").read_bytes() == DATA


def test_verify_detects_a_corrupted_file(tmp_path: Path) -> None:
    with serving_models(ModelMirror({"tiny.onnx": DATA})) as base:
        model = load_zoo(_zoo(tmp_path, base)).get("tiny")
        assert model is not None
        path = fetch_model(model, tmp_path)
    with path.open("r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02")
    wrong = verify_file(model, path)
    assert wrong is not None and "does not match its published sha256" in wrong


def test_an_unwritable_models_dir_is_a_clear_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "models"
    not_a_dir.write_text("a file where MODELS_DIR should be")
    with serving_models(ModelMirror({"tiny.onnx": DATA})) as base:
        model = load_zoo(_zoo(tmp_path, base)).get("tiny")
        assert model is not None
        with pytest.raises(ModelDownloadError, match="cannot write it into MODELS_DIR") as err:
            fetch_model(model, not_a_dir)
    assert not err.value.retryable
