"""The GPU part of `bench.pipeline`, on whatever device is here (a CPU stand-in without CUDA):
the matting-stage run behind the balancer and the model's own rate answer with figures that
hold together, and the utilisation sampler stops cleanly with or without NVIDIA's driver."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import pipeline

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_gpu_use_sampler_stops_with_or_without_a_driver() -> None:
    use = pipeline.GpuUse()
    use.start()
    util, busy = use.stop()
    assert not use.is_alive()
    assert 0.0 <= util <= 100.0
    assert 0.0 <= busy <= 1.0


def test_stage_rate_and_model_limit_on_a_tiny_unet(tmp_path: Path) -> None:
    data = tmp_path / "data"
    paths = pipeline._studio_images(data / "input" / "bench", 6, w=96, h=64)
    models = tmp_path / "models"
    env = {**pipeline._env(), "DATA_DIR": str(data), "MODELS_DIR": str(models),
           "DEFAULT_MODEL": "bench_unet", "MAX_BATCH_SIZE": "4", "MAX_BATCH_DELAY_MS": "5"}
    model = pipeline.build_unet(models, 2, 64, 4, env)

    rate, batch, util = pipeline._stage_rate(env, data, paths, 1, 0.3)
    assert rate > 0
    assert 1.0 <= batch <= 4.0  # the balancer's requests were batched within the model's cap
    assert 0.0 <= util <= 100.0
    outputs = sorted((data / "matting_output" / "bench").glob("*.png"))
    assert len(outputs) == len(paths)  # every image came back as a cut-out
    assert pipeline._bare_rate(model, env, batch=2) > 0


def test_steps_section_times_both_ways() -> None:
    text = pipeline._steps_section()
    rows = [line for line in text.splitlines() if line.startswith(("| one", "| on "))]
    assert len(rows) == 2
    ms = [float(row.split("|")[2]) for row in rows]
    assert all(m > 0 for m in ms)


def test_whole_stack_rate_with_its_profile(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole stack on a tiny U-Net: every image of the job completes, and each service
    was profiled while it ran (py-spy is a dev dependency)."""
    monkeypatch.setattr(pipeline, "GPU_PROFILE_DELAY_S", 0.0)
    monkeypatch.setattr(pipeline, "GPU_PROFILE_S", 2.0)
    models = tmp_path / "models"
    pipeline.build_unet(models, 2, 64, 16, pipeline._env())

    stack = pipeline._stack_rate(tmp_path, models, 40)
    assert stack["completed"] == 40 and stack["rate"] > 0
    assert 0.0 <= stack["busy"] <= 1.0
    assert stack["profile"]["gateway"]["samples"] > 0
    text = pipeline._profile_text(stack["profile"])
    assert "| gateway |" in text and "| matting_worker_1 |" in text
