"""What the public API must not tell: where the models and the data live on disk."""

from __future__ import annotations

from collections.abc import Callable

from tests.support.gateway import Gateway

Start = Callable[..., Gateway]


def test_models_lists_file_names_not_absolute_paths(start_gateway: Start) -> None:
    gw = start_gateway()
    models_dir = gw.settings.models_dir
    models_dir.mkdir(parents=True, exist_ok=True)
    (models_dir / "mine.onnx").write_bytes(b"x" * 5)
    r = gw.client.get("/models")
    assert r.status_code == 200
    [mine] = [m for m in r.json()["models"] if m["name"] == "mine"]
    assert mine["path"] == "mine.onnx" and mine["size"] == 5
    assert str(models_dir.resolve()) not in r.text and str(models_dir) not in r.text
