"""Fixtures every test package may use: the S3 server (tests/support/seaweed.py).

The suite keeps OpenVINO's compiled-model cache (OPENVINO_CACHE_DIR) in its own temporary
folder, so a test run never writes into the home folder of whoever runs it; a test about the
cache sets its own folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

pytest_plugins = ["tests.support.seaweed"]


@pytest.fixture(autouse=True, scope="session")
def _openvino_cache_in_a_temporary_folder(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[None]:
    before = os.environ.get("OPENVINO_CACHE_DIR")
    os.environ["OPENVINO_CACHE_DIR"] = str(tmp_path_factory.mktemp("openvino-cache"))
    yield
    if before is None:
        os.environ.pop("OPENVINO_CACHE_DIR", None)
    else:
        os.environ["OPENVINO_CACHE_DIR"] = before
