from __future__ import annotations

import json
from pathlib import Path

import pytest

from matting_worker.engines.presets import PRESETS, PresetError, match_preset, resolve_preset


@pytest.mark.parametrize(
    ("stem", "preset"),
    [
        ("u2net", "u2net"),
        ("u2netp", "u2net"),
        ("u2net_human_seg", "u2net"),
        ("silueta", "silueta"),
        ("isnet-general-use", "isnet"),
        ("isnet-anime", "isnet-anime"),
        ("birefnet-general", "birefnet"),
        ("birefnet-general-lite", "birefnet"),
        ("birefnet-portrait", "birefnet"),
        ("birefnet-massive", "birefnet"),
        ("birefnet-hrsod", "birefnet"),
        ("BiRefNet_HR", "birefnet-hr"),
        ("bria-rmbg", "bria-rmbg"),
        ("bria-rmbg-1.4", "rmbg-1.4"),
        ("modnet_photographic_portrait_matting", "modnet"),
        ("rvm_mobilenetv3_fp32", "rvm"),
        ("selfie_segmentation", "selfie"),
        ("u2net_cloth_seg", "u2net_cloth_seg"),
        ("ben_custom", "ben"),
        ("my-own-model", "generic"),
    ],
)
def test_rembg_zoo_names(stem: str, preset: str) -> None:
    assert match_preset(stem).name == preset


def test_zoo_conventions() -> None:
    u2 = PRESETS["u2net"]
    assert (u2.input_size, u2.minmax, u2.activation, u2.scale) == ((320, 320), True, "none", "max")
    bi = PRESETS["birefnet"]
    assert (bi.input_size, bi.activation, bi.minmax) == ((1024, 1024), "sigmoid", True)
    assert bi.mean == (0.485, 0.456, 0.406) and bi.std == (0.229, 0.224, 0.225)
    isnet = PRESETS["isnet"]
    assert isnet.input_size == (1024, 1024) and isnet.std == (1.0, 1.0, 1.0)
    modnet = PRESETS["modnet"]
    assert (modnet.size_policy, modnet.ref_size, modnet.multiple) == ("ref", 512, 32)
    assert modnet.mean == (0.5, 0.5, 0.5) and modnet.std == (0.5, 0.5, 0.5)
    assert PRESETS["rvm"].recurrent and PRESETS["rvm"].output == 1


def test_rembg_families_follow_rembgs_sessions() -> None:
    """rembg 2.0.86's sessions: each family's statistics, size and output handling."""
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    expect = {
        "u2net": ((320, 320), imagenet, "none", None),
        "silueta": ((320, 320), imagenet, "none", None),
        "u2net_cloth_seg": ((768, 768), imagenet, "none", (1, 2, 3)),
        "isnet": ((1024, 1024), ((0.5, 0.5, 0.5), (1.0, 1.0, 1.0)), "none", None),
        "isnet-anime": ((1024, 1024), (imagenet[0], (1.0, 1.0, 1.0)), "none", None),
        "ben": ((1024, 1024), ((0.5, 0.5, 0.5), (1.0, 1.0, 1.0)), "none", None),
        "birefnet": ((1024, 1024), imagenet, "sigmoid", None),
        "bria-rmbg": ((1024, 1024), imagenet, "none", None),
    }
    for name, (size, (mean, std), activation, classes) in expect.items():
        p = PRESETS[name]
        assert (p.input_size, p.mean, p.std, p.activation, p.classes) == (
            size, mean, std, activation, classes), name
        assert p.resample == "rembg" and p.scale == "max", name
    # Not rembg's: the finer resampling stays the default for everything else.
    assert {PRESETS[n].resample for n in ("generic", "modnet", "rvm", "selfie")} == {"fine"}


def test_json_overrides_fields(tmp_path: Path) -> None:
    model = tmp_path / "u2netp.onnx"
    model.write_bytes(b"")
    (tmp_path / "u2netp.json").write_text(json.dumps({"input_size": 256, "minmax": False}))
    p = resolve_preset(model)
    assert p.input_size == (256, 256)
    assert p.minmax is False
    assert p.scale == "max"  # untouched fields keep the file-name preset's value
    assert p.name == "u2net+json"


def test_json_can_start_from_another_preset(tmp_path: Path) -> None:
    model = tmp_path / "portrait-v2.onnx"
    (tmp_path / "portrait-v2.json").write_text('{"preset": "modnet", "ref_size": 640}')
    p = resolve_preset(model)
    assert (p.size_policy, p.ref_size, p.mean) == ("ref", 640, (0.5, 0.5, 0.5))


def test_no_json_means_file_name_preset(tmp_path: Path) -> None:
    assert resolve_preset(tmp_path / "silueta.onnx") == PRESETS["silueta"]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", "not readable JSON"),
        ("[1, 2]", "JSON object"),
        ('{"mean": [0.5, 0.5]}', "mean"),
        ('{"activation": "relu"}', "activation"),
        ('{"input_size": 4}', "input_size"),
        ('{"std": [1, 0, 1]}', "std"),
        ('{"colour": "rgb"}', "colour"),
        ('{"preset": "nope"}', "unknown 'nope'"),
        ('{"resample": "bicubic"}', "resample"),
        ('{"classes": []}', "classes"),
        ('{"classes": [1, 256]}', "classes"),
        ('{"classes": [-1]}', "classes"),
    ],
)
def test_bad_json_is_a_clear_error(tmp_path: Path, content: str, needle: str) -> None:
    (tmp_path / "m.json").write_text(content)
    with pytest.raises(PresetError) as info:
        resolve_preset(tmp_path / "m.onnx")
    message = str(info.value)
    assert "m.json" in message and needle in message
