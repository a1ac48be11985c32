"""The gateway client against an in-process stand-in of the public API (httpx transport): what
it sends, how it reports progress, and that errors carry the server's detail."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from mattepipe.client.gateway import CHUNK, GatewayClient, GatewayError, content_type_for


class FakeGateway:
    """Records requests; answers like docs/DESIGN.md's public API."""

    def __init__(self, states: list[str] | None = None,
                 zip_bytes: bytes = b"PK\x05\x06" + bytes(18)) -> None:
        self.requests: list[httpx.Request] = []
        self.bodies: list[bytes] = []
        self.states = states or ["running", "completed"]
        self.zip_bytes = zip_bytes

    def __call__(self, req: httpx.Request) -> httpx.Response:
        self.requests.append(req)
        self.bodies.append(req.read())
        if req.headers.get("authorization") not in (None, "Bearer k3y"):
            return httpx.Response(401, json={"detail": "bad API key"})
        path = req.url.path
        if path == "/upload":
            return httpx.Response(202, json={"job_id": "j1", "status_url": "/status/j1",
                                             "download_url": "/download/j1"})
        if path == "/status/j1":
            state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
            return httpx.Response(200, json={"job_id": "j1", "state": state, "progress": 50.0})
        if path == "/download/j1":
            if req.url.params.get("partial") != "1" and self.states[0] == "running":
                return httpx.Response(409, json={"detail": "job is still running; use ?partial=1"})
            return httpx.Response(200, content=self.zip_bytes,
                                  headers={"Content-Type": "application/zip"})
        if path == "/health":
            return httpx.Response(200, json={"status": "ok"})
        return httpx.Response(404, json={"detail": f"unknown job {path.rsplit('/', 1)[-1]}"})


def client(fake: FakeGateway, key: str | None = None) -> GatewayClient:
    return GatewayClient("http://gw.test", key, transport=httpx.MockTransport(fake))


def test_upload_streams_the_file_with_its_type_and_options(tmp_path: Path) -> None:
    archive = tmp_path / "photos.zip"
    payload = bytes(range(256)) * (CHUNK // 128 + 3)  # a bit over two chunks
    archive.write_bytes(payload)
    fake, seen = FakeGateway(), []
    with client(fake, "k3y") as c:
        answer = c.upload_file(archive, model="portrait", output="both",
                               progress_cb=lambda done, total: seen.append((done, total)))
    assert answer.job_id == "j1"
    req = fake.requests[0]
    assert req.method == "POST" and req.headers["content-type"] == "application/zip"
    assert req.headers["content-length"] == str(len(payload))
    assert req.headers["authorization"] == "Bearer k3y"
    assert dict(req.url.params) == {"filename": "photos.zip", "output": "both",
                                    "model": "portrait"}
    assert fake.bodies[0] == payload
    assert len(seen) == 3 and seen[-1] == (len(payload), len(payload))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_wait_polls_until_a_final_state() -> None:
    fake, seen = FakeGateway(["ingesting", "running", "running", "completed_with_errors"]), []
    with client(fake) as c:
        final = c.wait("j1", progress_cb=lambda st: seen.append(st.state), poll_s=0.0)
    assert final.state == "completed_with_errors"
    assert seen == ["ingesting", "running", "running", "completed_with_errors"]


def test_wait_gives_up_after_its_timeout() -> None:
    with client(FakeGateway(["running"])) as c, pytest.raises(TimeoutError, match="running"):
        c.wait("j1", poll_s=0.01, timeout=0.05)


def test_download_writes_the_zip_whole(tmp_path: Path) -> None:
    blob = b"PK" + bytes(3 * CHUNK)
    fake, seen = FakeGateway(["completed"], zip_bytes=blob), []
    dest = tmp_path / "out" / "result.zip"
    with client(fake) as c:
        assert c.download("j1", dest, progress_cb=lambda d, t: seen.append(d)) == dest
    assert dest.read_bytes() == blob
    assert seen[-1] == len(blob)
    assert [p.name for p in dest.parent.iterdir()] == ["result.zip"]


def test_errors_carry_the_servers_detail(tmp_path: Path) -> None:
    fake = FakeGateway(["running"])
    with client(fake) as c:
        with pytest.raises(GatewayError) as err:
            c.status("nope")
        assert err.value.status == 404 and err.value.detail == "unknown job nope"
        with pytest.raises(GatewayError, match="use \\?partial=1"):
            c.download("j1", tmp_path / "r.zip")
        assert not list(tmp_path.iterdir())  # nothing half-written is left
        c.download("j1", tmp_path / "r.zip", partial=True)
    with client(fake, "wrong") as c, pytest.raises(GatewayError) as err:
        c.status("j1")
    assert err.value.status == 401 and "bad API key" in str(err.value)


def test_an_unreachable_gateway_is_a_clear_error() -> None:
    def refuse(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=req)

    with GatewayClient("http://gw.test", transport=httpx.MockTransport(refuse)) as c:
        assert c.health() is False
        with pytest.raises(GatewayError, match=r"cannot reach the gateway at http://gw\.test"):
            c.status("j1")


@pytest.mark.parametrize(("name", "ctype"), [
    ("a.ZIP", "application/zip"), ("b.tar", "application/x-tar"),
    ("c.tar.gz", "application/gzip"), ("d.tgz", "application/gzip"), ("e.jpg", "image/jpeg"),
    ("f.bin", "application/octet-stream")])
def test_content_types(name: str, ctype: str) -> None:
    assert content_type_for(Path(name)) == ctype


def test_answers_are_models_that_keep_what_the_server_sent() -> None:
    body = {"job_id": "j1", "state": "running", "progress": 50.0, "new_field": [1, 2]}

    def answer(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/status/j1":
            return httpx.Response(200, json=body)
        if req.url.path == "/models":
            return httpx.Response(200, json={"default": "classical", "models": [
                {"name": "classical", "kind": "builtin", "path": "", "preset": "", "size": 0}]})
        return httpx.Response(200, json=["not", "a", "job"])

    with GatewayClient("http://gw.test", transport=httpx.MockTransport(answer)) as c:
        st = c.status("j1")
        assert (st.state, st.progress, st.eta_s) == ("running", 50.0, None)
        assert st.model_dump(mode="json", exclude_unset=True) == body
        assert [m.name for m in c.models().models] == ["classical"]
        with pytest.raises(GatewayError, match="not a JobList"):
            c.jobs()
