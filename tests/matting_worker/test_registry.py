from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from matting_worker.engines.classical import ClassicalEngine
from matting_worker.engines.identity import IdentityEngine
from matting_worker.engines.onnx_model import OnnxEngine
from matting_worker.engines.portrait import PORTRAIT_MODEL, PortraitEngine
from matting_worker.engines.registry import UnknownModel, create_engine, list_models
from matting_worker.engines.tflite_model import TFLiteEngine
from matting_worker.engines.torch_model import TorchEngine
from tests.matting_worker.tiny_models import TinyNet, export_onnx, save_script

BUILTINS = ["classical", "portrait", "identity", "classical-shadows"]


def test_builtins_without_models_dir(tmp_path: Path) -> None:
    assert [m.name for m in list_models(tmp_path / "missing")] == BUILTINS
    assert [m.name for m in list_models(None)] == BUILTINS
    assert all(m.kind == "builtin" for m in list_models(tmp_path))


def test_dropped_in_models_are_listed(tmp_path: Path) -> None:
    export_onnx(TinyNet(), tmp_path / "u2netp.onnx")
    save_script(TinyNet(), tmp_path / "mine.pt")
    shutil.copy(PORTRAIT_MODEL, tmp_path / "selfie_segmentation.tflite")
    (tmp_path / "u2netp.json").write_text("{}")  # settings, not a model
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / ".hidden.onnx").write_bytes(b"")
    models = {m.name: m for m in list_models(tmp_path)}
    assert list(models) == [*BUILTINS, "mine", "selfie_segmentation", "u2netp"]
    assert (models["u2netp"].kind, models["u2netp"].preset) == ("onnx", "u2net")
    assert models["mine"].kind == "torchscript"
    assert (models["selfie_segmentation"].kind, models["selfie_segmentation"].preset) == (
        "tflite", "selfie")
    assert models["u2netp"].size == (tmp_path / "u2netp.onnx").stat().st_size


def test_name_clashes(tmp_path: Path) -> None:
    export_onnx(TinyNet(), tmp_path / "twice.onnx")
    save_script(TinyNet(), tmp_path / "twice.torchscript")
    export_onnx(TinyNet(), tmp_path / "classical.onnx")  # cannot shadow a built-in
    models = [m for m in list_models(tmp_path) if m.kind != "builtin"]
    assert [(m.name, m.kind) for m in models] == [("twice", "onnx")]
    assert isinstance(create_engine("classical", tmp_path), ClassicalEngine)


def test_create_engine_picks_runtime_without_loading(tmp_path: Path) -> None:
    export_onnx(TinyNet(), tmp_path / "a.onnx")
    save_script(TinyNet(), tmp_path / "b.pt")
    save_script(TinyNet(), tmp_path / "c.torchscript")
    shutil.copy(PORTRAIT_MODEL, tmp_path / "d.tflite")
    a = create_engine("a", tmp_path)
    assert isinstance(a, OnnxEngine) and a.session is None  # loading is the worker's job
    assert isinstance(create_engine("b", tmp_path), TorchEngine)
    assert isinstance(create_engine("c", tmp_path), TorchEngine)
    assert isinstance(create_engine("d", tmp_path), TFLiteEngine)
    assert isinstance(create_engine("identity", tmp_path), IdentityEngine)
    assert isinstance(create_engine("portrait", tmp_path), PortraitEngine)


def test_unknown_model_lists_what_there_is(tmp_path: Path) -> None:
    export_onnx(TinyNet(), tmp_path / "u2netp.onnx")
    with pytest.raises(UnknownModel) as info:
        create_engine("u2net", tmp_path)
    assert isinstance(info.value, KeyError)
    message = str(info.value)
    assert "'u2net'" in message
    assert "classical, portrait, identity, classical-shadows, u2netp" in message
    assert info.value.available == [*BUILTINS, "u2netp"]
