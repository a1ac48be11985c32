"""The web page in headless Chromium against the real supervised stack: pick a folder of three
photos, watch the job finish in the jobs table, open its gallery of real comparison sheets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import browser, page, screenshot  # noqa: F401  (fixtures)
from tests.support.images import photo_bytes
from tests.support.stack import Stack

pytestmark = pytest.mark.integration


def test_folder_upload_to_gallery(stack: Stack, tmp_path: Path, page: Any) -> None:  # noqa: F811
    folder = tmp_path / "pick" / "shoot"
    (folder / "more").mkdir(parents=True)
    names = {"astronaut.jpg": "astronaut.jpg", "chelsea.jpg": "more/chelsea.jpg",
             "coffee.jpg": "coffee.jpg"}
    for sample, rel in names.items():
        (folder / rel).write_bytes(photo_bytes(sample, 160))

    page.goto(stack.url + "/")
    page.wait_for_function("document.querySelectorAll('#model option').length >= 2")
    page.set_input_files("#folder-input", str(folder))
    page.click("#start")
    page.wait_for_function("document.getElementById('upload-status').textContent"
                           ".includes('started')", timeout=60_000)
    job_id = page.text_content("#upload-status").split()[1]
    row = f"#jobs tr[data-job='{job_id}']"
    page.wait_for_selector(f"{row} .state.completed", timeout=240_000)
    assert "3 / 3" in page.text_content(row)

    page.click(f"{row} button.open")
    page.wait_for_function("document.querySelectorAll('#g-items .item img').length === 3")
    page.wait_for_function("Array.from(document.querySelectorAll('#g-items .item img'))"
                           ".every(i => i.complete && i.naturalWidth > 0)", timeout=30_000)
    items = page.eval_on_selector_all(
        "#g-items .item", "els => els.map(e => [e.dataset.path, e.dataset.coverage])")
    assert sorted(p for p, _ in items) == sorted(f"shoot/{r}" for r in names.values())
    # the comparison stage's gt-free numbers reach the cards
    assert all(0.0 < float(c) < 1.0 for _, c in items), items
    # a sheet is a real comparison sheet, wider than the photo it shows
    assert page.eval_on_selector("#g-items .item img", "i => i.naturalWidth") > 160
    screenshot(page, "web.png")
