"""Zoo models through the whole stack: missing (each image fails at once with how to get the
model), then pulled with the CLI, or fetched by the workers on first use from a mirror on
127.0.0.1, once for both workers."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.matting_worker.test_engine_pool import const_model
from tests.support.images import make_zip, photo_bytes
from tests.support.model_server import ModelMirror, serving_models, zoo_file
from tests.support.servers import ROOT
from tests.support.stack import Stack, running_stack

pytestmark = pytest.mark.integration

FILE = "Tiny-Net-epoch_9.onnx"
"""As rembg's release files are named: the zoo saves it as `<name>.onnx`."""


def _catalogue(tmp_path: Path, base: str, blob: bytes) -> Path:
    zoo = zoo_file(tmp_path / "zoo.json", base, {FILE: blob})
    zoo.write_text(zoo.read_text().replace('"name": "Tiny-Net-epoch_9"', '"name": "tiny"'))
    return zoo


def _job(stack: Stack, model: str) -> tuple[str, dict[str, Any]]:
    archive = make_zip({f"p/{i}.jpg": photo_bytes("coffee.jpg", 96) for i in range(4)})
    with stack.client() as c:
        r = c.post(f"/upload?model={model}", content=archive,
                   headers={"Content-Type": "application/zip"})
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
    return job_id, stack.wait_final(job_id)


def _download(stack: Stack, job_id: str) -> zipfile.ZipFile:
    with stack.client() as c:
        url = c.get(f"/status/{job_id}").json()["download_url"]
        r = c.get(url)
    assert r.status_code == 200, r.text
    return zipfile.ZipFile(io.BytesIO(r.content))


def _alphas(stack: Stack, job_id: str) -> list[float]:
    zf = _download(stack, job_id)
    out = []
    for name in zf.namelist():
        if name.startswith("matting_output/") and name.endswith(".png"):
            out.append(float(np.asarray(Image.open(io.BytesIO(zf.read(name))))[..., 3].mean()))
    return out


def test_missing_then_pulled(tmp_path: Path) -> None:
    blob = const_model(tmp_path / FILE, 0.4).read_bytes()
    mirror = ModelMirror({FILE: blob})
    with serving_models(mirror) as base:
        zoo = _catalogue(tmp_path, base, blob)
        with running_stack(tmp_path / "data", matting_workers=2, comparison_workers=1,
                           model_catalogue=zoo) as stack:
            with stack.client() as c:
                listed = {m["name"]: m for m in c.get("/models").json()["models"]}
            assert listed["tiny"]["present"] is False and listed["tiny"]["licence"] == "test"

            job_id, st = _job(stack, "tiny")
            assert st["state"] == "failed" or st["failed"] == 4, st
            with stack.client() as c:
                tasks = c.get(f"/jobs/{job_id}/tasks").json()["tasks"]
            assert len(tasks) == 4
            for t in tasks:  # failed for good at once, with the way out in the reason
                assert t["state"] == "permanently_failed", t
                assert "run `mattepipe models pull tiny`" in t["error"], t
                assert t["retry_count"] == 1 and t["failed_stage"] == "matting", t  # no retry

            env = {**os.environ, "PYTHONPATH": str(ROOT), "MODEL_CATALOGUE": str(zoo),
                   "MODELS_DIR": str(stack.settings.models_dir)}
            pulled = subprocess.run([sys.executable, "-m", "mattepipe", "models", "pull",
                                     "tiny"], env=env, capture_output=True, text=True,
                                    timeout=120)
            assert pulled.returncode == 0, pulled.stderr

            job_id, st = _job(stack, "tiny")
            assert st["state"] == "completed", st
            assert _alphas(stack, job_id) == pytest.approx([0.4 * 255] * 4, abs=3)
    assert mirror.full_gets(FILE) == 1


def test_fetched_on_first_use_once_for_all_workers(tmp_path: Path) -> None:
    blob = const_model(tmp_path / FILE, 0.7).read_bytes()
    mirror = ModelMirror({FILE: blob}, chunk=16_384, delay_s=0.02)  # slow: the workers meet
    with serving_models(mirror) as base:
        zoo = _catalogue(tmp_path, "https://example.invalid/not-used", blob)
        # one call per task (not one batched call), so both workers get images at once
        with running_stack(tmp_path / "data", matting_workers=2, comparison_workers=1,
                           model_catalogue=zoo, model_base_url=base,
                           model_download=True, stage_batch_size=1) as stack:
            job_id, st = _job(stack, "tiny")
            assert st["state"] == "completed", st
            assert _alphas(stack, job_id) == pytest.approx([0.7 * 255] * 4, abs=3)
            saved = stack.settings.models_dir / "tiny.onnx"
            assert saved.read_bytes() == blob
            with httpx.Client() as c:  # both workers answered from the one file
                served = [w["served"] for w in (c.get(
                    f"{stack.settings.matting_api_url}/workers",
                    headers={"Authorization": f"Bearer {stack.settings.internal_token}"}
                ).json())]
            assert sum(served) >= 4
    assert mirror.full_gets(FILE) == 1
