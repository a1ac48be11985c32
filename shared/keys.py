"""The gateway's API keys as tenants: `label:key` entries parsed once, kept as sha256 hashes.

A job or upload keeps the hash of the key that created it (`api_key_hash`), and a key sees only
its own. The raw keys are read from the settings (API_KEY, API_KEYS, API_KEYS_FILE, ADMIN_KEY)
and turned into a `KeyTable` at load; only hashes and labels are kept in it, so nothing that
holds the table (the gateway's state, a log line, a traceback) can show a key. A presented key
is hashed and compared with every stored hash by `hmac.compare_digest`, all of them every time,
so neither the answer's time nor its content tells which entry came close.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "ADMIN_LABEL",
    "DEFAULT_LABEL",
    "LABEL_PATTERN",
    "KeySettingError",
    "KeyTable",
    "Tenant",
    "build_table",
    "key_hash",
    "parse_key_entries",
]

DEFAULT_LABEL = "default"
"""The tenant label of the single key of API_KEY."""
ADMIN_LABEL = "admin"
"""The label of ADMIN_KEY: the one key that sees every tenant's jobs."""
LABEL_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
"""A tenant label: it shows in logs, so it is short and plain."""


class KeySettingError(ValueError):
    """A malformed key setting; pydantic reports it as a settings error naming the entry."""


def key_hash(key: str | None) -> str | None:
    """What a job keeps of the key that created it (never the key itself): sha256, hex."""
    return hashlib.sha256(key.encode()).hexdigest() if key else None


@dataclass(frozen=True)
class Tenant:
    """Who a presented key belongs to: its hash (what its jobs keep), label, admin or not."""

    key_hash: str
    label: str
    is_admin: bool = False


@dataclass(frozen=True)
class KeyTable:
    """The configured keys as hashes and labels. Empty means the gateway is open: no key is
    asked for and every caller is the one anonymous tenant."""

    tenants: tuple[Tenant, ...] = field(default=())

    @property
    def configured(self) -> bool:
        return bool(self.tenants)

    @property
    def labels(self) -> list[str]:
        return [t.label for t in self.tenants]

    def lookup(self, given: str) -> Tenant | None:
        """The tenant whose key is `given`, or None. Compares the presented key's hash with
        every stored hash in constant time, without stopping at a match."""
        if not given:
            return None
        h = hashlib.sha256(given.encode("utf-8", "surrogatepass")).hexdigest().encode()
        found: Tenant | None = None
        for t in self.tenants:
            if hmac.compare_digest(h, t.key_hash.encode()):
                found = t
        return found

    def __repr__(self) -> str:
        return f"KeyTable(labels={self.labels!r})"


def parse_key_entries(text: str, separator: str, where: str) -> list[tuple[str, str]]:
    """`label:key` entries of API_KEYS (comma-separated) or of API_KEYS_FILE (one a line;
    blank lines and `#` comments skipped). The key is everything after the first colon; an
    entry without one, an empty key or a label that is not plain is refused, naming the
    entry's position (never its key)."""
    out: list[tuple[str, str]] = []
    for n, raw in enumerate(text.split(separator), start=1):
        entry = raw.strip()
        if not entry or (separator == "\n" and entry.startswith("#")):
            continue
        label, colon, key = entry.partition(":")
        label, key = label.strip(), key.strip()
        if not colon:
            raise KeySettingError(f"{where}: entry {n} is not 'label:key' (no colon)")
        if not LABEL_PATTERN.fullmatch(label):
            raise KeySettingError(f"{where}: entry {n} has a bad label {label!r}: use letters, "
                            "digits, '_', '.', '@' or '-' (at most 64)")
        if not key:
            raise KeySettingError(f"{where}: entry {n} (label {label!r}) has an empty key")
        if any(c.isspace() for c in key):
            raise KeySettingError(f"{where}: the key of {label!r} holds whitespace")
        out.append((label, key))
    return out


def build_table(
    api_key: str | None,
    api_keys: str | None,
    api_keys_file: Path | None,
    admin_key: str | None,
) -> KeyTable:
    """All key settings as one table; a key or label given twice is refused (a key shared by
    two tenants would make their jobs one tenant's)."""
    entries: list[tuple[str, str, bool]] = []
    if api_key:
        entries.append((DEFAULT_LABEL, api_key, False))
    if api_keys:
        entries += [(lbl, k, False) for lbl, k in parse_key_entries(api_keys, ",", "API_KEYS")]
    if api_keys_file is not None:
        try:
            text = api_keys_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise KeySettingError(f"API_KEYS_FILE {str(api_keys_file)!r} cannot be read: "
                            f"{exc.__class__.__name__}: {getattr(exc, 'strerror', None) or exc}"
                            ) from None
        found = parse_key_entries(text, "\n", f"API_KEYS_FILE {str(api_keys_file)!r}")
        entries += [(lbl, k, False) for lbl, k in found]
    if admin_key:
        entries.append((ADMIN_LABEL, admin_key, True))
    return KeyTable(tuple(_unique(entries)))


def _unique(entries: Iterable[tuple[str, str, bool]]) -> Iterable[Tenant]:
    labels: set[str] = set()
    hashes: set[str] = set()
    for label, key, admin in entries:
        h = hashlib.sha256(key.encode()).hexdigest()
        if label in labels:
            raise KeySettingError(f"tenant label {label!r} is given twice (API_KEY is "
                                  f"{DEFAULT_LABEL!r}, ADMIN_KEY is {ADMIN_LABEL!r})")
        if h in hashes:
            raise KeySettingError(f"the key of {label!r} is also another tenant's key")
        labels.add(label)
        hashes.add(h)
        yield Tenant(h, label, admin)
