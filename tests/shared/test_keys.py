"""The key settings (API_KEY, API_KEYS, API_KEYS_FILE, ADMIN_KEY) parsed once into a table of
sha256 hashes and labels: what is accepted, what is refused and how, and that a raw key shows
nowhere once the settings are loaded."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from shared import keys
from shared.keys import KeyTable, build_table, key_hash
from shared.settings import Settings

SECRET_A = "sk-alpha-5b1e7d"
SECRET_B = "sk-beta-c09f42"


def settings(**kw: Any) -> Settings:
    base: dict[str, Any] = {"api_key": None, "api_keys": None, "api_keys_file": None,
                            "admin_key": None}
    return Settings(_env_file=None, **{**base, **kw})  # type: ignore[call-arg]


def refused(**kw: Any) -> str:
    with pytest.raises(ValidationError) as exc:
        settings(**kw)
    return str(exc.value)


def test_api_keys_become_labelled_hashes() -> None:
    s = settings(api_keys=f" a:{SECRET_A} , team.b@x:{SECRET_B}:with:colons ,", admin_key="root")
    t = s.key_table
    assert t.labels == ["a", "team.b@x", "admin"]
    assert [x.key_hash for x in t.tenants] == [
        hashlib.sha256(k.encode()).hexdigest()
        for k in (SECRET_A, f"{SECRET_B}:with:colons", "root")]
    assert [x.is_admin for x in t.tenants] == [False, False, True]
    found = t.lookup(SECRET_A)
    assert found is not None and found.label == "a" and not found.is_admin
    assert t.lookup("root") is not None and t.lookup("root").is_admin  # type: ignore[union-attr]
    assert t.lookup(SECRET_B) is None  # the key is everything after the first colon


def test_api_key_alone_is_the_default_tenant_with_the_old_hash() -> None:
    t = settings(api_key="k3y").key_table
    assert t.labels == ["default"] and t.tenants[0].key_hash == key_hash("k3y")
    assert not settings().key_table.configured


def test_api_keys_file_one_per_line(tmp_path: Path) -> None:
    f = tmp_path / "keys"
    f.write_text(f"# tenants of the lab\n\na:{SECRET_A}\n  b:{SECRET_B}  \n# c:old\n")
    t = settings(api_keys_file=f, api_key="solo").key_table
    assert t.labels == ["default", "a", "b"]
    assert t.lookup(SECRET_B) is not None and t.lookup("old") is None


@pytest.mark.parametrize(("kw", "says"), [
    ({"api_keys": f"a:{SECRET_A},{SECRET_B}"}, "API_KEYS: entry 2 is not 'label:key'"),
    ({"api_keys": "a:"}, "entry 1 (label 'a') has an empty key"),
    ({"api_keys": f":{SECRET_A}"}, "entry 1 has a bad label ''"),
    ({"api_keys": f"a b:{SECRET_A}"}, "bad label 'a b'"),
    ({"api_keys": f"a:{SECRET_A} x"}, "the key of 'a' holds whitespace"),
    ({"api_keys": f"a:{SECRET_A},a:{SECRET_B}"}, "label 'a' is given twice"),
    ({"api_keys": f"a:{SECRET_A},b:{SECRET_A}"}, "the key of 'b' is also another tenant's"),
    ({"api_keys": f"admin:{SECRET_A}", "admin_key": SECRET_B}, "label 'admin' is given twice"),
    ({"api_key": SECRET_A, "admin_key": SECRET_A}, "the key of 'admin' is also another"),
    ({"api_keys_file": Path("/nonexistent/keys")}, "API_KEYS_FILE '/nonexistent/keys' cannot"),
])
def test_malformed_keys_are_a_settings_error_that_names_no_key(kw: dict[str, Any],
                                                               says: str) -> None:
    msg = refused(**kw)
    assert says in msg
    assert SECRET_A not in msg and SECRET_B not in msg


def test_a_bad_line_of_the_file_is_named(tmp_path: Path) -> None:
    f = tmp_path / "keys"
    f.write_text(f"a:{SECRET_A}\n\nno-colon-here\n")
    msg = refused(api_keys_file=f)
    assert f"API_KEYS_FILE {str(f)!r}: entry 3 is not 'label:key'" in msg


def test_env_variables_are_read_and_empty_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEYS", f"a:{SECRET_A}")
    monkeypatch.setenv("ADMIN_KEY", "")
    monkeypatch.setenv("API_KEYS_FILE", "")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.key_table.labels == ["a"] and s.admin_key is None and s.api_keys_file is None


def test_no_raw_key_in_repr_str_or_the_gateways_copy() -> None:
    s = settings(api_key="solo-key-1", api_keys=f"a:{SECRET_A}", admin_key=SECRET_B)
    for text in (repr(s), str(s), repr(s.key_table), s.model_dump_json()):
        for secret in ("solo-key-1", SECRET_A, SECRET_B):
            assert secret not in text
    kept = s.without_raw_keys()
    assert (kept.api_key, kept.api_keys, kept.admin_key) == (None, None, None)
    assert kept.key_table == s.key_table and kept.key_table.lookup(SECRET_A) is not None


def test_every_stored_hash_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Behaviour, not timing: each lookup hands `hmac.compare_digest` the presented key's hash
    against every stored hash, whichever matches (none, the first, the last)."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(keys.hmac, "compare_digest", spy)
    t = build_table(None, f"a:{SECRET_A},b:{SECRET_B}", None, "root")
    stored = [x.key_hash.encode() for x in t.tenants]
    for given, label in ((SECRET_A, "a"), ("root", "admin"), ("nope", None), ("ü-not-ascii", None)):
        calls.clear()
        found = t.lookup(given)
        assert (found.label if found else None) == label
        assert [b for _, b in calls] == stored
        assert {a for a, _ in calls} == {hashlib.sha256(given.encode()).hexdigest().encode()}
    calls.clear()
    assert t.lookup("") is None and KeyTable().lookup(SECRET_A) is None
