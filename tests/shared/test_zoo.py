"""The packaged model catalogue (`shared/zoo.json`): rembg 2.0.86's zoo, as data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from matting_worker.engines.presets import PRESETS
from shared.catalogue import BUILTIN_NAMES
from shared.zoo import PACKAGED_ZOO, ZooError, all_models, load_zoo

REMBG = "https://github.com/danielgatis/rembg/releases/download/v0.0.0/"


def test_the_packaged_zoo_is_rembgs() -> None:
    zoo = load_zoo()
    assert set(zoo.names) == {
        "u2net", "u2netp", "u2net_human_seg", "u2net_cloth_seg", "silueta",
        "isnet-general-use", "isnet-anime", "birefnet-general", "birefnet-general-lite",
        "birefnet-portrait", "birefnet-dis", "birefnet-hrsod", "birefnet-cod",
        "birefnet-massive", "bria-rmbg"}
    for m in zoo.models:
        assert m.url == REMBG + m.file
        assert m.licence and m.description and m.source.startswith("https://")
        assert m.preset in PRESETS  # every zoo file name implies a preset the worker has
    assert zoo.get("u2net") is not None
    assert zoo.get("u2net").hash == "md5:60024c5c889badc19c04ad937298a77b"  # type: ignore[union-attr]
    bria = zoo.get("bria-rmbg")
    assert bria is not None and bria.algorithm == "sha256"  # sha256 where rembg has one
    assert bria.file == "bria-rmbg-2.0.onnx" and bria.local_name == "bria-rmbg.onnx"
    assert zoo.get("birefnet-general").preset == "birefnet"  # type: ignore[union-attr]
    assert zoo.get("u2netp").preset == "u2net"  # type: ignore[union-attr]


def test_a_mirror_keeps_names_and_hashes() -> None:
    m = load_zoo().get("u2netp")
    assert m is not None
    assert m.url_from("") == REMBG + "u2netp.onnx"
    assert m.url_from("http://mirror.lan/models/") == "http://mirror.lan/models/u2netp.onnx"


def test_all_models_lists_the_zoo_after_the_files(tmp_path: Path) -> None:
    (tmp_path / "u2netp.onnx").write_bytes(b"x" * 10)
    (tmp_path / "mine.onnx").write_bytes(b"y")
    found = all_models(tmp_path, load_zoo())
    names = [m.name for m in found]
    k = len(BUILTIN_NAMES)
    assert names[:k] == list(BUILTIN_NAMES)
    assert names[k:k + 2] == ["mine", "u2netp"]  # files, present
    here = {m.name: m for m in found}
    assert here["u2netp"].present and here["u2netp"].licence == "Apache-2.0"
    assert here["u2netp"].size == 10
    assert not here["u2net"].present and here["u2net"].preset == "u2net"
    assert names.count("u2netp") == 1


@pytest.mark.parametrize(("entry", "needle"), [
    ({"name": "x", "file": "x.onnx", "url": "ftp://x/x.onnx", "hash": "md5:" + "0" * 32},
     "http(s) URL"),
    ({"name": "x", "file": "x.onnx", "url": "https://x/x.onnx", "hash": "crc:1"},
     "sha256:<64 hex>"),
    ({"name": "classical", "file": "x.onnx", "url": "https://x/x.onnx",
      "hash": "md5:" + "0" * 32}, "not a usable model name"),
    ({"name": "x", "file": "../x.onnx", "url": "https://x/x.onnx", "hash": "md5:" + "0" * 32},
     "bare file name"),
])
def test_a_bad_catalogue_names_file_and_field(tmp_path: Path, entry: dict[str, str],
                                              needle: str) -> None:
    path = tmp_path / "zoo.json"
    path.write_text(json.dumps({"models": [entry]}))
    with pytest.raises(ZooError) as err:
        load_zoo(path)
    assert str(path) in str(err.value) and needle in str(err.value)


def test_twice_the_same_name_is_refused(tmp_path: Path) -> None:
    entry = {"name": "x", "file": "x.onnx", "url": "https://x/x.onnx", "hash": "md5:" + "0" * 32}
    path = tmp_path / "zoo.json"
    path.write_text(json.dumps({"models": [entry, entry]}))
    with pytest.raises(ZooError, match="names more than once: x"):
        load_zoo(path)


def test_the_package_ships_the_catalogue() -> None:
    assert PACKAGED_ZOO.name == "zoo.json" and PACKAGED_ZOO.parent.name == "shared"
