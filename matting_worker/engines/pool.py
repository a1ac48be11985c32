"""The engines one worker holds in memory: at most MAX_LOADED_MODELS, least recently used out.

A worker asked for many models in turn would otherwise keep every one it ever loaded, until
a GPU runs out of memory. Here an engine is *used* (pinned) while a batch runs on it and is
only unloaded when idle: the least recently used idle engines go as soon as more than the
limit are loaded, their runtime objects dropped and torch's CUDA cache emptied. A request that
names more models than the limit still runs (each of its engines is pinned); the pool is back
under the limit when its batch ends.

A model file that changes (another inode, size or mtime, or its `<stem>.json`) is loaded again
on its next use, so replacing `u2net.onnx` needs no restart; `reload` does the same on demand
(`POST /models/reload`). A batch already running on the old engine finishes on it.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matting_worker.engines.base import Engine

__all__ = ["EnginePool", "FileStamp", "free_accelerator_memory", "stamp_files"]

log = logging.getLogger("mattepipe.engines")

FileStamp = tuple[tuple[int, int, int], ...]
"""Per watched file: (inode, size, mtime ns); (-1, -1, -1) for a missing one."""


def stamp_files(paths: Sequence[Path]) -> FileStamp:
    out = []
    for p in paths:
        try:
            st = p.stat()
        except OSError:
            out.append((-1, -1, -1))
        else:
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


def free_accelerator_memory() -> None:
    """Collect the dropped engines now and return torch's cached CUDA blocks to the driver
    (only when torch is already imported: it is never imported for this)."""
    gc.collect()
    torch: Any = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass(eq=False)
class _Slot:
    name: str
    engine: Engine
    paths: tuple[Path, ...]
    stamp: FileStamp
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)
    users: int = 0
    uses: int = 0
    retired: bool = False


class EnginePool:
    """Engines by name, created by `create(name)` and loaded on first use."""

    def __init__(self, create: Callable[[str], Engine], max_loaded: int) -> None:
        self._create = create
        self.max_loaded = max(1, max_loaded)
        self._slots: OrderedDict[str, _Slot] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self.loads = 0
        self.unloads = 0

    # --- use ---------------------------------------------------------------------------------
    @contextmanager
    def using(self, names: Sequence[str]) -> Iterator[dict[str, Engine]]:
        """The engines of `names`, loaded and pinned for the block (unpinned, and the pool
        trimmed to its limit, at its end)."""
        slots: list[_Slot] = []
        try:
            for name in dict.fromkeys(names):
                slots.append(self._acquire(name))
            yield {s.name: s.engine for s in slots}
        finally:
            self._release(slots)

    def engine(self, name: str) -> Engine:
        """Load `name` if needed (for start-up and batch sizes); not pinned."""
        with self.using([name]) as engines:
            return engines[name]

    def get(self, name: str) -> Engine | None:
        """The loaded engine, or None; loads nothing."""
        with self._lock:
            slot = self._slots.get(name)
            return slot.engine if slot is not None else None

    def _acquire(self, name: str) -> _Slot:
        while True:
            stale: list[_Slot] = []
            with self._lock:
                slot = self._slots.get(name)
                if slot is not None and stamp_files(slot.paths) == slot.stamp:
                    slot.users += 1
                    slot.uses += 1
                    slot.last_used = time.time()
                    self._slots.move_to_end(name)
                    return slot
                if slot is not None:
                    log.info("engine %s: its model file changed; loading it again", name)
                    stale = self._retire(slot)
                loading = self._loading.setdefault(name, threading.Lock())
            self._unload(stale)
            with loading:  # one load per name; other names load (and run) meanwhile
                with self._lock:
                    if name in self._slots:
                        continue  # loaded by another thread while we waited: check it
                engine = self._create(name)
                paths = engine.watched_files()
                before = stamp_files(paths)  # before load: a change during it is seen next
                engine.load()
                slot = _Slot(name, engine, paths, before, users=1, uses=1)
                with self._lock:
                    self._slots[name] = slot
                    self.loads += 1
                    evicted = self._trim()
                self._unload(evicted)
                log.info("engine %s loaded (%d of at most %d)", name, len(self._slots),
                         self.max_loaded)
                return slot

    def _release(self, slots: list[_Slot]) -> None:
        done: list[_Slot] = []
        with self._lock:
            for slot in slots:
                slot.users -= 1
                if slot.retired and slot.users == 0:
                    done.append(slot)
            done += self._trim()
        self._unload(done)

    # --- unloading (callers hold self._lock, then call _unload without it) ---------------------
    def _retire(self, slot: _Slot) -> list[_Slot]:
        """Out of the pool; to unload now if idle, else when its last user releases it."""
        if self._slots.get(slot.name) is slot:
            del self._slots[slot.name]
        slot.retired = True
        return [slot] if slot.users == 0 else []

    def _trim(self) -> list[_Slot]:
        out: list[_Slot] = []
        for slot in list(self._slots.values()):  # least recently used first
            if len(self._slots) <= self.max_loaded:
                break
            if slot.users == 0:
                out += self._retire(slot)
        return out

    def _unload(self, slots: list[_Slot]) -> None:
        if not slots:
            return
        for slot in slots:
            slot.engine.unload()
            log.info("engine %s unloaded", slot.name)
        with self._lock:
            self.unloads += len(slots)
        slots.clear()
        free_accelerator_memory()

    # --- control -----------------------------------------------------------------------------
    def reload(self, names: Sequence[str] | None = None) -> dict[str, Any]:
        """Unload `names` (default: every loaded engine) and load them again from their files
        now, so a broken new file shows here; unknown or unloaded names are listed, untouched."""
        with self._lock:
            targets = list(self._slots) if names is None else list(dict.fromkeys(names))
            done: list[_Slot] = []
            found = [n for n in targets if n in self._slots]
            for name in found:
                done += self._retire(self._slots[name])
        self._unload(done)
        failed: dict[str, str] = {}
        for name in found:
            try:
                self.engine(name)
            except Exception as exc:
                failed[name] = f"{type(exc).__name__}: {exc}"
        return {"reloaded": [n for n in found if n not in failed], "failed": failed,
                "not_loaded": [n for n in targets if n not in found]}

    def status(self) -> dict[str, Any]:
        """What is loaded, least recently used first: what `GET /models` shows."""
        with self._lock:
            loaded = [{"name": s.name, "loaded_at": s.loaded_at, "last_used": s.last_used,
                       "in_use": s.users, "uses": s.uses,
                       "files": [p.name for p in s.paths if p.exists()]}
                      for s in self._slots.values()]
            return {"max_loaded": self.max_loaded, "loaded": loaded, "loads": self.loads,
                    "unloads": self.unloads}

    def loaded(self) -> dict[str, Engine]:
        """The engines loaded now, by name, least recently used first."""
        with self._lock:
            return {name: s.engine for name, s in self._slots.items()}

    def infos(self) -> dict[str, dict[str, object]]:
        return {name: e.info() for name, e in self.loaded().items()}
