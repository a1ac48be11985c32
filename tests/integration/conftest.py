"""The real stack for the integration suite: every service its own process under Supervisor.

One stack per test module (starting it costs a few seconds), each on its own free ports and
its own DATA_DIR, so nothing depends on test order or on another suite's leftovers. The helpers
are in tests/support/stack.py (the stack) and tests/support/images.py (what is sent to it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.stack import Stack, running_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("data")) as s:
        yield s


@pytest.fixture
def fresh_stack(tmp_path: Path) -> Iterator[Stack]:
    """A stack of its own, for a test that breaks things."""
    with running_stack(tmp_path / "data") as s:
        yield s
