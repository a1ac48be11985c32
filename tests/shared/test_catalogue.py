"""The model catalogue: names and presets without engines, the same the worker builds."""

from __future__ import annotations

from pathlib import Path

from matting_worker.engines.presets import PRESETS, match_preset
from matting_worker.engines.registry import BUILTIN_ENGINES
from shared.catalogue import BUILTIN_NAMES, PRESET_PATTERNS, list_models, preset_name


def test_the_catalogue_names_what_the_registry_builds() -> None:
    assert tuple(BUILTIN_ENGINES) == BUILTIN_NAMES
    assert {name for _, name in PRESET_PATTERNS} <= set(PRESETS)


def test_presets_by_file_stem(tmp_path: Path) -> None:
    for stem, name in [("u2netp", "u2net"), ("u2net_cloth_seg", "u2net_cloth_seg"),
                       ("BiRefNet-general-HR", "birefnet-hr"), ("modnet_photo", "modnet"),
                       ("mine", "generic")]:
        assert preset_name(stem) == name == match_preset(stem).name
    (tmp_path / "isnet-general-use.onnx").write_bytes(b"x" * 7)
    (tmp_path / "portrait.tflite").write_bytes(b"")  # cannot shadow a built-in
    [model] = [m for m in list_models(tmp_path) if m.kind != "builtin"]
    assert (model.name, model.kind, model.preset, model.size) == (
        "isnet-general-use", "onnx", "isnet", 7)
