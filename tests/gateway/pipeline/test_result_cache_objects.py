"""The content-hash cache on S3 (a real SeaweedFS): an input's key is the same whether it is
a file or an object, and a reused result is a server-side copy under the task's own names;
a source that is gone means the task runs."""

from __future__ import annotations

from pathlib import Path

from gateway.pipeline.result_cache import CACHE_WORKER, ResultCache, add_cache_keys, file_key
from shared.formats import OutputMode
from shared.schemas import MattingParams, MattingRequest
from shared.storage import Storage

SALT = b"tenant+engines+options"


def test_keys_are_the_same_for_files_and_objects(s3_storage: Storage, tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000  # above one read block
    src = tmp_path / "a.jpg"
    src.write_bytes(data)
    s3_storage.objects.put("input/j/a.jpg", data)
    rows = [{"input": "input/j/a.jpg"}, {"input": "input/j/gone.jpg"}, {"input": None}]
    add_cache_keys(rows, s3_storage, SALT)  # type: ignore[arg-type]
    assert rows[0]["cache_key"] == file_key(src, SALT)
    assert rows[1]["cache_key"] is None and rows[2]["cache_key"] is None


async def test_reuse_copies_objects(s3_storage: Storage) -> None:
    cache = ResultCache(db=None, storage=s3_storage)  # type: ignore[arg-type]
    s3_storage.objects.put("matting_output/j1/a.png", b"cut")
    s3_storage.objects.put("matting_output/j1/a.alpha.png", b"matte")
    req = MattingRequest(task_id=2, job_id="j2", input="input/j2/b.jpg",
                         output="matting_output/j2/b.png",
                         params=MattingParams(models=["classical"], output=OutputMode.BOTH))
    out = await cache._reuse("matting_output/j1/a.png", req)
    assert out is not None and out.result is not None
    assert out.result.worker_id == CACHE_WORKER
    assert s3_storage.objects.get("matting_output/j2/b.png") == b"cut"
    assert s3_storage.objects.get("matting_output/j2/b.alpha.png") == b"matte"
    s3_storage.objects.delete("matting_output/j1/a.alpha.png")
    req3 = req.model_copy(update={"output": "matting_output/j3/c.png", "job_id": "j3"})
    assert await cache._reuse("matting_output/j1/a.png", req3) is None  # runs instead
    assert not s3_storage.objects.exists("matting_output/j3/c.png")
