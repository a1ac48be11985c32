"""Where an interrupted `mattepipe run/upload` left off: one small JSON file per upload.

The file is keyed by what makes two invocations "the same": the absolute path, the
fingerprint of its content (sizes and mtimes), the server, the model and the output mode.
It holds the tus URL as soon as the upload exists and the job id as soon as the job exists,
so a second start continues the upload from the server's offset, or goes straight to
following the job. It lives under `$MATTEPIPE_STATE_DIR`, else `$XDG_CACHE_HOME/mattepipe`,
else `~/.cache/mattepipe`, and is removed once the work is done.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from shared.timing import STATE_MAX_AGE_S

__all__ = ["ResumeState", "StateStore", "default_state_dir", "state_key"]


def default_state_dir() -> Path:
    if env := os.environ.get("MATTEPIPE_STATE_DIR"):
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "mattepipe"


def state_key(path: Path, fingerprint: str, server: str, model: str | None,
              output: str) -> str:
    raw = json.dumps([str(path), fingerprint, server.rstrip("/"), model or "", output])
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


@dataclass
class ResumeState:
    key: str
    path: str
    server: str
    size: int
    tus_url: str | None = None
    job_id: str | None = None
    created_at: float = 0.0


class StateStore:
    """Load, save (atomically) and drop resume states in one folder."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or default_state_dir()

    def _file(self, key: str) -> Path:
        return self.folder / f"upload-{key}.json"

    def load(self, key: str) -> ResumeState | None:
        """The saved state, or None (none saved, or unreadable: then it starts over)."""
        try:
            raw = json.loads(self._file(key).read_text())
            state = ResumeState(**raw)
        except (OSError, ValueError, TypeError):
            return None
        return state if state.key == key else None

    def save(self, state: ResumeState) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if not state.created_at:
            state.created_at = time.time()
        target = self._file(state.key)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(state), indent=1))
        tmp.replace(target)

    def drop(self, key: str) -> None:
        self._file(key).unlink(missing_ok=True)

    def prune(self, older_than_s: float = STATE_MAX_AGE_S) -> int:
        """Drop states nobody came back for (their uploads have long expired on the server);
        answers how many went."""
        cutoff, gone = time.time() - older_than_s, 0
        for f in self.folder.glob("upload-*.json"):
            try:
                if f.stat().st_mtime < cutoff:
                    f.unlink()
                    gone += 1
            except OSError:
                continue
        return gone

    def all(self) -> list[ResumeState]:
        found = []
        for f in sorted(self.folder.glob("upload-*.json")):
            state = self.load(f.stem.removeprefix("upload-"))
            if state is not None:
                found.append(state)
        return found
