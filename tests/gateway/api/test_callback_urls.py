"""`callback_url` at job creation: refused with a 400 and a reason, never a 500, no job made;
and the webhook's state in `/status`."""

from __future__ import annotations

import io
import time
from collections.abc import Callable

import pytest
from PIL import Image

from tests.support.gateway import Gateway, seed

Start = Callable[..., Gateway]

def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(buf, "PNG")
    return buf.getvalue()


BAD = [
    "http://127.0.0.1/",
    "http://10.0.0.1/",
    "http://169.254.169.254/",
    "http://100.64.0.1/",
    "http://[::1]/",
    "http://user:pw@example.com/",
    "http://grafana:3000@example.com/",
    "http://[::1",
    "http://example.com:99999/",
    "ftp://example.com/",
]


@pytest.mark.parametrize("url", BAD)
def test_upload_refuses_internal_or_malformed_callback_urls(start_gateway: Start,
                                                            url: str) -> None:
    c = start_gateway().client
    r = c.post("/upload", params={"callback_url": url}, content=b"x")
    assert r.status_code == 400, r.text
    assert "callback_url" in r.json()["detail"]
    r = c.post("/jobs", json={"upload_id": "nope", "callback_url": url})
    assert r.status_code == 400 and "callback_url" in r.json()["detail"]
    assert c.get("/jobs").json()["total"] == 0


def test_allow_private_admits_a_local_receiver_but_never_userinfo(start_gateway: Start) -> None:
    c = start_gateway(callback_allow_private=True).client
    r = c.post("/upload", params={"callback_url": "http://user:pw@127.0.0.1:9/"}, content=b"x")
    assert r.status_code == 400 and "user name" in r.json()["detail"]
    r = c.post("/upload", params={"callback_url": "http://127.0.0.1:9/hook", "filename": "a.png"},
               content=_png(), headers={"Content-Type": "image/png"})
    assert r.status_code == 202, r.text


def test_status_shows_the_webhook_state(start_gateway: Start) -> None:
    gw = start_gateway()
    now = time.time()
    common = {"state": "completed", "total": 0, "finished_at": now, "created_at": now}
    # the pending one is fired by the running scheduler: "localhost" keeps it on this host
    # (refused as loopback, so it may already be failed when read)
    seed(gw.settings, [
        {"id": "none", **common},
        {"id": "pending", "callback_url": "http://localhost:9/h", **common},
        {"id": "sent", "callback_url": "https://example.com/h", "callback_done": True,
         "callback_attempts": 1, **common},
        {"id": "failed", "callback_url": "https://example.com/h", "callback_done": True,
         "callback_attempts": 5, "callback_error": "the receiver answered 500", **common},
    ], [])
    states = {j: gw.client.get(f"/status/{j}").json() for j in ("none", "sent", "failed")}
    assert states["none"]["callback_state"] is None
    assert states["sent"]["callback_state"] == "delivered"
    assert states["sent"]["callback_error"] is None
    assert states["failed"]["callback_state"] == "failed"
    assert states["failed"]["callback_error"] == "the receiver answered 500"
    assert gw.client.get("/status/pending").json()["callback_state"] in ("pending", "failed")
