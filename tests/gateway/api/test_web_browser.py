"""The two pages in headless Chromium: the offline gallery in the result zip, and the gateway's
web page (upload a folder, follow the job, open its gallery; with an API key too) against the
real gateway and a real stage server over HTTP."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from gateway.app import create_app
from gateway.results.report import ReportItem, build_report
from tests.support.browser import browser, page, screenshot  # noqa: F401  (fixtures)
from tests.support.gateway import FAST, StageServer, make_settings
from tests.support.servers import ThreadServer

pytestmark = pytest.mark.integration

N_ITEMS = 250


def write_gallery(tmp_path: Path) -> tuple[Path, dict[str, float]]:
    rng = random.Random(7)
    # distinct at the gallery's 5 significant digits, in no particular order
    values = rng.sample(range(1000, 99999), N_ITEMS)
    mse = {f"set/{i // 50}/img{i:03d}.jpg": v / 1e6 for i, v in enumerate(values)}
    items = [ReportItem(path=p, state="completed",
                        metrics={"classical": {"sad": v * 50, "mse": v, "grad": v * 3,
                                               "conn": v * 4, "coverage": 0.3}},
                        compare_output=f"final_results/{p[:-4]}_compare.jpg")
             for p, v in mse.items()]
    items.append(ReportItem(path="broken.jpg", state="rejected", error="not an image"))
    out = tmp_path / "zip"
    (out / "index.html").parent.mkdir(parents=True)
    (out / "index.html").write_bytes(build_report("job-g", items, ["classical"]).html_bytes)
    worst = sorted(mse, key=mse.__getitem__, reverse=True)
    for k, p in enumerate(worst[:8]):  # the first page's first sheets exist, as tiny jpgs
        f = out / f"final_results/{p[:-4]}_compare.jpg"
        f.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (96, 32), (40 + 25 * k, 90, 200 - 20 * k)).save(f)
    return out / "index.html", mse


def cards(pg: Any) -> list[dict[str, str]]:
    return pg.eval_on_selector_all(  # type: ignore[no-any-return]
        "#items .item", "els => els.map(e => ({path: e.dataset.path, mse: e.dataset.mse,"
        " state: e.dataset.state}))")


def test_offline_gallery_sorts_pages_and_filters(tmp_path: Path, page: Any) -> None:  # noqa: F811
    index, mse = write_gallery(tmp_path)
    worst = sorted(mse, key=mse.__getitem__, reverse=True)
    page.goto(index.as_uri())
    page.select_option("#sort", "mse-desc")
    first = cards(page)
    assert len(first) == 100
    assert [c["path"] for c in first] == worst[:100]
    assert float(first[0]["mse"]) == pytest.approx(max(mse.values()), rel=1e-4)
    assert page.text_content("#page-info") == "page 1 / 3"
    assert page.text_content("#count") == f"{N_ITEMS + 1} of {N_ITEMS + 1} images"
    assert page.is_disabled("#page-prev")
    # the worst sheets, which exist, really decode
    assert page.eval_on_selector("#items .item img", "i => i.decode().then(() => i.naturalWidth)")

    page.click("#page-next")
    assert page.text_content("#page-info") == "page 2 / 3"
    assert [c["path"] for c in cards(page)] == worst[100:200]
    page.click("#page-next")
    last = cards(page)
    assert [c["path"] for c in last[:50]] == worst[200:]
    assert last[-1]["path"] == "broken.jpg"  # no metrics: always last
    assert page.is_disabled("#page-next")

    page.select_option("#sort", "mse-asc")
    assert [c["path"] for c in cards(page)] == worst[::-1][:100]
    page.fill("#q", "set/3/")
    shown = cards(page)
    want = [p for p in sorted(mse, key=mse.__getitem__) if p.startswith("set/3/")]
    assert [c["path"] for c in shown] == want and len(want) == 50
    assert page.text_content("#count") == f"50 of {N_ITEMS + 1} images"
    page.fill("#q", "")
    page.select_option("#state", "rejected")
    assert [c["path"] for c in cards(page)] == ["broken.jpg"]
    page.select_option("#state", "")
    page.select_option("#sort", "mse-desc")
    screenshot(page, "gallery.png", full_page=False)


# --- the live page ---------------------------------------------------------------------------

@pytest.fixture
def gateway_url(data_dir: Path, stage_server: StageServer,
                request: pytest.FixtureRequest) -> Iterator[str]:
    key = getattr(request, "param", None)
    app = create_app(make_settings(data_dir, stage_server.url, api_key=key), **FAST)
    with ThreadServer(app) as srv:
        yield srv.url


def image_folder(tmp_path: Path, n: int = 3) -> Path:
    folder = tmp_path / "pick" / "holiday"
    (folder / "day 2").mkdir(parents=True)
    for i in range(n):
        sub = folder / ("day 2" if i == 2 else "")
        Image.new("RGB", (40, 30), (60 * i, 120, 200)).save(sub / f"img{i}.jpg")
    (folder / ".DS_Store").write_bytes(b"\0finder junk")
    return folder


def wait_completed(pg: Any) -> str:
    pg.wait_for_function("document.getElementById('upload-status').textContent"
                         ".includes('started')", timeout=60_000)
    job_id: str = pg.text_content("#upload-status").split()[1]
    row = f"#jobs tr[data-job='{job_id}']"
    pg.wait_for_selector(f"{row} .state.completed", timeout=60_000)
    return job_id


def open_gallery(pg: Any, job_id: str, n: int) -> list[str]:
    pg.click(f"#jobs tr[data-job='{job_id}'] button.open")
    pg.wait_for_function(f"document.querySelectorAll('#g-items .item img').length === {n}")
    # every sheet decodes: served by /jobs/{id}/files/…, fetched as a blob when a key is set
    pg.wait_for_function("Array.from(document.querySelectorAll('#g-items .item img'))"
                         ".every(i => i.complete && i.naturalWidth > 0)", timeout=20_000)
    return sorted(pg.eval_on_selector_all("#g-items .item", "els => els.map(e => e.dataset.path)"))


def test_upload_a_folder_and_see_its_gallery(tmp_path: Path, page: Any,  # noqa: F811
                                             gateway_url: str) -> None:
    page.goto(gateway_url + "/")
    page.wait_for_function("document.querySelectorAll('#model option').length >= 2")
    assert page.input_value("#model") == "classical"
    page.set_input_files("#folder-input", str(image_folder(tmp_path)))
    assert page.text_content("#selection").startswith("3 files")  # .DS_Store left out
    page.select_option("#output", "both")
    page.click("#start")
    job_id = wait_completed(page)
    row = f"#jobs tr[data-job='{job_id}']"
    assert page.text_content(f"{row} .name") == "holiday.zip"
    assert "3 / 3" in page.text_content(row)
    assert page.get_attribute(f"{row} a.download", "href") == f"/download/{job_id}"
    assert open_gallery(page, job_id, 3) == [
        "holiday/day 2/img2.jpg", "holiday/img0.jpg", "holiday/img1.jpg"]
    with page.expect_download() as dl:
        page.click(f"{row} a.download")
    assert dl.value.path().read_bytes()[:2] == b"PK"
    screenshot(page, "web-gateway.png")


@pytest.mark.parametrize("gateway_url", ["k3y"], indirect=True)
def test_with_an_api_key(tmp_path: Path, page: Any, gateway_url: str) -> None:  # noqa: F811
    page.goto(gateway_url + "/")
    page.wait_for_selector("#message:not([hidden])")
    assert "API key" in page.text_content("#message")
    page.fill("#api-key", "k3y")
    page.click("#key-form button")
    page.wait_for_function("document.querySelectorAll('#model option').length >= 2")
    page.set_input_files("#files-input", [str(p) for p in image_folder(tmp_path, 2).glob("*.jpg")])
    page.click("#start")
    job_id = wait_completed(page)
    assert open_gallery(page, job_id, 2) == ["img0.jpg", "img1.jpg"]
    assert page.evaluate("localStorage.getItem('mattepipe.apiKey')") == "k3y"
    with page.expect_download() as dl:  # the link cannot carry the key: fetch + blob
        page.click(f"#jobs tr[data-job='{job_id}'] a.download")
    assert dl.value.path().read_bytes()[:2] == b"PK"
    row = f"#jobs tr[data-job='{job_id}']"
    page.once("dialog", lambda d: d.accept())
    page.click(f"{row} button.cancel")  # a finished job: Delete removes its files
    page.wait_for_selector(f"{row} .state.cancelled")
    assert page.is_hidden(f"{row} a.download") and page.is_hidden(f"{row} button.cancel")
