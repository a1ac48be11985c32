"""`mattepipe models list | pull | verify` against a mirror on 127.0.0.1 and a test catalogue."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mattepipe.cli.main import app
from tests.support.model_server import ModelMirror, serving_models, zoo_file

runner = CliRunner()
BLOB = os.urandom(200_000)


@pytest.fixture()
def env(tmp_path: Path) -> Iterator[tuple[dict[str, str], ModelMirror]]:
    mirror = ModelMirror({"alpha-net.onnx": BLOB, "beta-net.onnx": BLOB[::-1]})
    with serving_models(mirror) as base:
        zoo = zoo_file(tmp_path / "zoo.json", base,
                       {"alpha-net.onnx": BLOB, "beta-net.onnx": BLOB[::-1]})
        yield {"MODEL_CATALOGUE": str(zoo), "MODELS_DIR": str(tmp_path / "models")}, mirror


def test_pull_then_list_then_verify(env: tuple[dict[str, str], ModelMirror],
                                    tmp_path: Path) -> None:
    e, mirror = env
    r = runner.invoke(app, ["models", "pull", "alpha-net"], env=e)
    assert r.exit_code == 0, r.output
    assert "sha256 checked" in r.output
    assert (tmp_path / "models/alpha-net.onnx").read_bytes() == BLOB

    r = runner.invoke(app, ["models", "pull", "alpha-net"], env=e)
    assert r.exit_code == 0 and "already in" in r.output
    assert mirror.full_gets("alpha-net.onnx") == 1

    r = runner.invoke(app, ["models", "list", "--json"], env=e)
    assert r.exit_code == 0, r.output
    listed = {m["name"]: m for m in json.loads(r.output)}
    assert {"classical", "portrait", "identity"} <= set(listed)
    assert listed["alpha-net"]["present"] and listed["alpha-net"]["size"] == len(BLOB)
    assert listed["alpha-net"]["licence"] == "test"
    assert not listed["beta-net"]["present"]

    r = runner.invoke(app, ["models", "list"], env=e)
    assert r.exit_code == 0 and "beta-net" in r.output and "pull" in r.output

    r = runner.invoke(app, ["models", "verify"], env=e)
    assert r.exit_code == 0, r.output
    assert "ok alpha-net" in r.output and "beta-net" not in r.output


def test_verify_detects_a_corrupted_file(env: tuple[dict[str, str], ModelMirror],
                                         tmp_path: Path) -> None:
    e, _ = env
    assert runner.invoke(app, ["models", "pull", "alpha-net", "beta-net"], env=e).exit_code == 0
    path = tmp_path / "models/beta-net.onnx"
    data = bytearray(path.read_bytes())
    data[5000] ^= 0xFF  # one flipped byte
    path.write_bytes(bytes(data))
    r = runner.invoke(app, ["models", "verify"], env=e)
    assert r.exit_code == 3, r.output
    assert "ok alpha-net" in r.output
    assert "BAD beta-net: beta-net.onnx does not match its published sha256" in r.output
    assert "pull beta-net --force" in r.output
    # --force replaces it with a checked copy
    assert runner.invoke(app, ["models", "pull", "beta-net", "--force"], env=e).exit_code == 0
    assert runner.invoke(app, ["models", "verify", "beta-net"], env=e).exit_code == 0


def test_unknown_names_are_usage_errors(env: tuple[dict[str, str], ModelMirror]) -> None:
    e, _ = env
    r = runner.invoke(app, ["models", "pull", "nope"], env=e)
    assert r.exit_code == 2 and "not in the model catalogue: nope" in r.output
    r = runner.invoke(app, ["models", "verify", "nope"], env=e)
    assert r.exit_code == 2
    r = runner.invoke(app, ["models", "verify", "alpha-net"], env=e)  # named, not pulled
    assert r.exit_code == 3 and "alpha-net.onnx is missing" in r.output


def test_a_failed_pull_says_why(env: tuple[dict[str, str], ModelMirror], tmp_path: Path) -> None:
    e, mirror = env
    mirror.files["alpha-net.onnx"] = b"tampered"
    r = runner.invoke(app, ["models", "pull", "alpha-net"], env=e)
    assert r.exit_code == 3
    assert "does not match its published sha256" in r.output and "deleted" in r.output
    assert not (tmp_path / "models/alpha-net.onnx").exists()


def test_a_broken_catalogue_is_refused_by_name(tmp_path: Path) -> None:
    bad = tmp_path / "zoo.json"
    bad.write_text(json.dumps({"models": [{"name": "x", "file": "x.onnx",
                                           "url": "ftp://x", "hash": "md5:00"}]}))
    r = runner.invoke(app, ["models", "list"], env={"MODEL_CATALOGUE": str(bad)})
    assert r.exit_code == 2
    assert "model catalogue" in r.output and "http(s) URL" in r.output
