"""Resume states: keyed by what makes two starts the same, saved atomically, pruned when old,
and an unreadable file means starting over rather than crashing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mattepipe.client.resume import ResumeState, StateStore, default_state_dir, state_key


def test_key_depends_on_every_argument_that_matters() -> None:
    base = (Path("/a/b"), "fp", "http://gw:8000", "classical", "rgba")
    key = state_key(*base)
    assert state_key(Path("/a/b"), "fp", "http://gw:8000/", "classical", "rgba") == key
    for i, other in enumerate((Path("/a/c"), "fp2", "http://gw:8001", "portrait", "alpha")):
        changed = list(base)
        changed[i] = other
        assert state_key(*changed) != key  # type: ignore[arg-type]


def test_save_load_drop_and_a_broken_file(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s")
    assert store.load("k") is None
    store.save(ResumeState(key="k", path="/x", server="http://gw", size=10, tus_url="u"))
    got = store.load("k")
    assert got is not None and got.tus_url == "u" and got.created_at > 0
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["upload-k.json"]
    (tmp_path / "s" / "upload-k.json").write_text("{not json")
    assert store.load("k") is None
    store.drop("k")
    store.drop("k")
    assert store.all() == []


def test_old_states_are_pruned(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    for key in ("old", "new"):
        store.save(ResumeState(key=key, path="/x", server="s", size=1))
    past = time.time() - 40 * 24 * 3600
    os.utime(tmp_path / "upload-old.json", (past, past))
    assert store.prune() == 1
    assert [s.key for s in store.all()] == ["new"]


def test_state_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.setenv("MATTEPIPE_STATE_DIR", str(tmp_path / "st"))
    assert default_state_dir() == tmp_path / "st"
    monkeypatch.delenv("MATTEPIPE_STATE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_state_dir() == tmp_path / "cache" / "mattepipe"
