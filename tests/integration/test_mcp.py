"""The MCP endpoint on the real stack under Supervisor: `remove_background` sends one image
through the real balancer and matting worker (engines `identity` and `classical`) and answers
a PNG cut-out with alpha, the size of the input; the job it ran as is the caller's alone."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.support.mcp import ImageContent, TextContent, ToolError, mcp_client
from tests.support.stack import Stack, running_stack

pytestmark = pytest.mark.integration

KEY_A = "mcp-tenant-a-6b1e"
KEY_B = "mcp-tenant-b-0c9d"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data: Path = tmp_path_factory.mktemp("mcp") / "data"
    data.mkdir()
    with running_stack(data, api_keys=f"a:{KEY_A},b:{KEY_B}", default_model="identity",
                       matting_workers=1, comparison_workers=1) as s:
        yield s


def client(stack: Stack, key: str) -> Any:
    return mcp_client(stack.url, key, timeout=180)


def photo(size: tuple[int, int]) -> str:
    """A JPEG with a bright disc on a dark ground (something for `classical` to cut out)."""
    im = Image.new("RGB", size, (20, 30, 40))
    w, h = size
    for y in range(h):
        for x in range(w):
            if (x - w / 2) ** 2 + (y - h / 2) ** 2 < (min(w, h) / 3) ** 2:
                im.putpixel((x, y), (230, 200, 60))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95)
    return base64.b64encode(buf.getvalue()).decode()


@pytest.mark.parametrize("model", ["identity", "classical"])
async def test_remove_background_answers_the_cut_out_of_the_real_worker(
    stack: Stack, model: str,
) -> None:
    async with client(stack, KEY_A) as a:
        res = await a.call_tool("remove_background",
                                {"image_base64": photo((61, 43)), "model": model})
    text, image = res.content
    assert isinstance(text, TextContent) and isinstance(image, ImageContent)
    with Image.open(io.BytesIO(base64.b64decode(image.data))) as im:
        assert (im.format, im.mode, im.size) == ("PNG", "RGBA", (61, 43))
        alpha = im.getchannel("A")
        if model == "identity":
            assert alpha.getextrema() == (255, 255)
        else:  # the disc is kept, the corner is not
            assert alpha.getpixel((30, 21)) > 200 and alpha.getpixel((1, 1)) < 60
    job = text.text.split()[1].rstrip(":")
    auth_a = {"Authorization": f"Bearer {KEY_A}"}
    async with httpx.AsyncClient(base_url=stack.url, timeout=60) as h:
        st = (await h.get(f"/status/{job}", headers=auth_a)).json()
        assert (st["state"], st["total"]) == ("completed", 1)
        theirs = await h.get(f"/status/{job}", headers={"Authorization": f"Bearer {KEY_B}"})
        assert theirs.status_code == 404
        assert (await h.post("/mcp", json={})).status_code == 401
    async with client(stack, KEY_B) as b:
        with pytest.raises(ToolError, match="unknown job"):
            await b.call_tool("job_status", {"job_id": job})
