"""The gateway's page in headless Chromium follows a running job through its live event stream
(`GET /jobs/{id}/events`, read with fetch so the API key header goes along), and still follows
it by polling when the stream is not to be had."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.app import create_app
from tests.gateway.api.test_web_browser import image_folder, wait_completed
from tests.support.browser import browser, page  # noqa: F401  (fixtures)
from tests.support.gateway import FAST, StageServer, make_settings
from tests.support.servers import ThreadServer

pytestmark = pytest.mark.integration
KEY = "k3y"
N = 3

# Every value the job's progress cell shows, in order, recorded in the page itself.
RECORD_PROGRESS = """() => {
  window.__progress = [];
  new MutationObserver(() => {
    document.querySelectorAll('#jobs tr[data-job] td:nth-child(3) .sub').forEach((e) => {
      const last = window.__progress[window.__progress.length - 1];
      if (e.textContent && e.textContent !== last) { window.__progress.push(e.textContent); }
    });
  }).observe(document.querySelector('#jobs tbody'), {subtree: true, childList: true,
                                                     characterData: true});
}"""


@pytest.fixture
def slow_gateway(data_dir: Path, stage_server: StageServer) -> Iterator[str]:
    """One stage request at a time, each a little slow: the job moves in visible steps."""
    stage_server.plan = {"matting": ["slow:0.3"] * N, "compare": ["slow:0.3"] * N}
    settings = make_settings(data_dir, stage_server.url, api_key=KEY, matting_concurrency=1,
                             comparison_concurrency=1)
    with ThreadServer(create_app(settings, **FAST)) as srv:
        yield srv.url


def start_job(pg: Any, url: str, tmp_path: Path) -> None:
    pg.goto(url + "/")
    pg.fill("#api-key", KEY)
    pg.click("#key-form button")
    pg.wait_for_function("document.querySelectorAll('#model option').length >= 2")
    pg.evaluate(RECORD_PROGRESS)
    pg.set_input_files("#folder-input", str(image_folder(tmp_path, N)))
    pg.click("#start")


def test_the_page_follows_a_job_through_its_event_stream(
        tmp_path: Path, page: Any, slow_gateway: str) -> None:  # noqa: F811
    streams: list[dict[str, str]] = []
    page.on("request", lambda r: streams.append(r.headers) if "/events" in r.url else None)
    start_job(page, slow_gateway, tmp_path)
    job_id = wait_completed(page)
    assert streams and streams[0]["authorization"] == f"Bearer {KEY}"
    # status events came in and the last (`end`) left the row complete
    assert page.evaluate("window.mattepipe.liveEvents") >= 2
    seen = page.evaluate("window.__progress")
    assert seen[-1] == "100 %" and len(seen) >= 2, seen
    assert f"{N} / {N}" in page.text_content(f"#jobs tr[data-job='{job_id}']")


def test_without_a_stream_the_page_polls(
        tmp_path: Path, page: Any, slow_gateway: str) -> None:  # noqa: F811
    page.route("**/events", lambda route: route.fulfill(
        status=404, content_type="application/json", body='{"detail": "Not Found"}'))
    start_job(page, slow_gateway, tmp_path)
    job_id = wait_completed(page)  # by polling /jobs, as before
    assert page.evaluate("window.mattepipe.liveEvents") == 0
    assert f"{N} / {N}" in page.text_content(f"#jobs tr[data-job='{job_id}']")
