"""The gateway's side of models: zoo models listed and accepted at upload, and the admin's
`POST /models/reload` through a real matting balancer to a real matting worker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from matting_worker.stage import MattingStage
from shared.balancer.app import BalancerConfig, create_balancer_app
from shared.settings import Settings
from shared.worker.server import create_worker_app
from tests.matting_worker.test_engine_pool import const_model
from tests.support.gateway import Gateway
from tests.support.images import zip_of_images
from tests.support.servers import INTERNAL_TOKEN, ThreadServer
from tests.support.waiting import wait_for

Start = Callable[..., Gateway]
ADMIN = "admin-5e6f7a8b9c"
TENANT = "tenant-1a2b3c4d"
KEYS = {"api_keys": f"t:{TENANT}", "admin_key": ADMIN}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_zoo_models_are_listed_and_accepted(start_gateway: Start) -> None:
    gw = start_gateway()
    listed = {m["name"]: m for m in gw.client.get("/models").json()["models"]}
    assert listed["classical"]["present"] and listed["classical"]["description"]
    assert listed["u2netp"]["present"] is False and listed["u2netp"]["preset"] == "u2net"
    assert listed["bria-rmbg"]["licence"].startswith("CC BY-NC 4.0")
    r = gw.client.post("/upload?model=u2netp&filename=a.zip", content=zip_of_images(["x.jpg"]),
                       headers={"Content-Type": "application/zip"})
    assert r.status_code == 202, r.text  # the worker fetches it, or says how to get it
    r = gw.client.post("/upload?model=u2netq&filename=a.zip", content=zip_of_images(["x.jpg"]),
                       headers={"Content-Type": "application/zip"})
    assert r.status_code == 400 and r.json()["detail"].startswith("unknown model 'u2netq'")


def test_reload_is_for_the_admin_and_reaches_every_worker(start_gateway: Start,
                                                          tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    const_model(models / "low.onnx", 0.2)
    ws = Settings(data_dir=tmp_path / "data", models_dir=models, default_model="low",
                  internal_token=INTERNAL_TOKEN, _env_file=None)  # type: ignore[call-arg]
    with ThreadServer(create_worker_app(MattingStage(ws), ws, "w-reload", 0)) as worker:
        cfg = BalancerConfig(service="matting_api", route="/matting", port=0,
                             worker_urls=[worker.url], queue_limit=10, queue_wait_s=5.0,
                             token=INTERNAL_TOKEN)
        with ThreadServer(create_balancer_app(cfg)) as balancer:
            gw = start_gateway(balancer.url, internal_token=INTERNAL_TOKEN, **KEYS)
            assert gw.client.post("/models/reload").status_code == 401
            r = gw.client.post("/models/reload", headers=auth(TENANT))
            assert r.status_code == 403 and "ADMIN_KEY" in r.json()["detail"]

            def ready() -> bool:
                r = gw.client.post("/models/reload", headers=auth(ADMIN))
                return r.status_code == 200 and r.json()["workers"][0]["ok"]

            wait_for(ready, 60, "the worker loaded and reloaded")
            r = gw.client.post("/models/reload", headers=auth(ADMIN),
                               json={"models": ["low", "other"]})
            assert r.status_code == 200, r.text
            [one] = r.json()["workers"]
            assert one == {"worker_id": "w-reload", "ok": True, "reloaded": ["low"],
                           "failed": {}, "not_loaded": ["other"], "error": ""}
            (models / "low.onnx").write_bytes(b"broken")
            [one] = gw.client.post("/models/reload", headers=auth(ADMIN)).json()["workers"]
            assert not one["ok"] and "low" in one["failed"]
            assert "http" not in str(one)  # no internal address reaches the client


def test_reload_without_a_balancer_is_a_502(start_gateway: Start) -> None:
    gw = start_gateway("http://127.0.0.1:9", internal_token=INTERNAL_TOKEN, **KEYS)
    r = gw.client.post("/models/reload", headers=auth(ADMIN))
    assert r.status_code == 502 and "did not answer" in r.json()["detail"]
