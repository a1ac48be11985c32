"""The model zoo: models a worker may download on first use, read from data (`zoo.json`).

rembg publishes its models as release files with a hash each (rembg 2.0.86's
`rembg/sessions/*.py`); `zoo.json` copies those URLs and hashes, with what each model is for
and its licence as published. A pulled model is saved as `MODELS_DIR/<name>.onnx`, so it
is an ordinary model file afterwards: `shared.catalogue` lists it and its file name implies
its preset (`shared.catalogue.preset_name`, the one place presets are chosen), exactly as for a
file copied from rembg's own folder.

`MODEL_CATALOGUE` replaces the packaged file (a mirror with its own hashes, or a test's);
`MODEL_BASE_URL` keeps the names and hashes but fetches `<base>/<file>` instead (a mirror).
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.catalogue import BUILTIN_NAMES, ModelInfo, list_models, preset_name
from shared.errors import ConfigError

__all__ = [
    "PACKAGED_ZOO",
    "Zoo",
    "ZooError",
    "ZooModel",
    "all_models",
    "load_zoo",
    "new_hasher",
]

PACKAGED_ZOO = Path(__file__).with_name("zoo.json")
"""The catalogue shipped with mattepipe (rembg 2.0.86's zoo)."""

_HASH = re.compile(r"^(md5:[0-9a-f]{32}|sha256:[0-9a-f]{64})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class ZooError(ConfigError, ValueError):
    """The catalogue file is unreadable or invalid; the message names the file and entry."""


class ZooModel(BaseModel):
    """One downloadable model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="what a job names in `model=`; saved as <name>.onnx")
    file: str = Field(description="the file's name at the source (the last part of `url`)")
    url: str
    hash: str = Field(description="`sha256:<hex>` or `md5:<hex>`, as rembg checks it")
    description: str = ""
    source: str = Field(default="", description="where the model comes from (paper, code)")
    licence: str = Field(default="", description="as the model's source publishes it")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value) or value in BUILTIN_NAMES:
            raise ValueError(f"{value!r} is not a usable model name")
        return value

    @field_validator("file")
    @classmethod
    def _file(cls, value: str) -> str:
        if "/" in value or "\\" in value or value in ("", ".", ".."):
            raise ValueError(f"{value!r} must be a bare file name")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value

    @field_validator("hash")
    @classmethod
    def _hash(cls, value: str) -> str:
        value = value.lower()
        if not _HASH.match(value):
            raise ValueError("must be 'sha256:<64 hex>' or 'md5:<32 hex>'")
        return value

    @property
    def local_name(self) -> str:
        """The file name in MODELS_DIR: the stem is the model's name."""
        return f"{self.name}.onnx"

    @property
    def preset(self) -> str:
        """The preset its file name implies (the file-name rules are the one source)."""
        return preset_name(self.name)

    @property
    def algorithm(self) -> str:
        return self.hash.split(":", 1)[0]

    @property
    def digest(self) -> str:
        return self.hash.split(":", 1)[1]

    def url_from(self, base_url: str) -> str:
        """`url`, or `<base_url>/<file>` when a mirror is configured."""
        return f"{base_url.rstrip('/')}/{self.file}" if base_url else self.url


class Zoo(BaseModel):
    model_config = ConfigDict(frozen=True)

    about: str = ""
    models: tuple[ZooModel, ...] = ()

    def get(self, name: str) -> ZooModel | None:
        for m in self.models:
            if m.name == name:
                return m
        return None

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]


def new_hasher(algorithm: str) -> Any:
    """A hashlib object for a zoo hash's algorithm (md5 only as a checksum, as rembg uses it)."""
    if algorithm == "md5":
        return hashlib.md5(usedforsecurity=False)
    return hashlib.new(algorithm)


@lru_cache(maxsize=8)
def _load(path: Path, mtime_ns: int) -> Zoo:
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ZooError(f"model catalogue {path}: not readable JSON: {exc}") from exc
    try:
        zoo = Zoo.model_validate(data)
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ZooError(f"model catalogue {path}: {where}") from exc
    names = zoo.names
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ZooError(f"model catalogue {path}: names more than once: {', '.join(twice)}")
    return zoo


def load_zoo(path: Path | None = None) -> Zoo:
    """The catalogue at `path` (default: the packaged one), read again when the file changes."""
    target = path or PACKAGED_ZOO
    try:
        mtime = target.stat().st_mtime_ns
    except OSError as exc:
        raise ZooError(f"model catalogue {target}: {exc.strerror or exc}") from exc
    return _load(target, mtime)



def all_models(models_dir: Path | None, zoo: Zoo) -> list[ModelInfo]:
    """What a job may name: `list_models` (built-ins, MODELS_DIR's files; a zoo model's file
    gains its description and licence), then the zoo models not downloaded yet
    (`present=False`)."""
    found = list_models(models_dir)
    listed = {m.name for m in found}
    out = []
    for info in found:
        entry = zoo.get(info.name)
        out.append(info if entry is None else info.model_copy(
            update={"description": entry.description, "licence": entry.licence}))
    out += [ModelInfo(name=m.name, kind="onnx", preset=m.preset, present=False,
                      description=m.description, licence=m.licence)
            for m in zoo.models if m.name not in listed]
    return out
