"""STAGE_BATCH_SIZE > 1: the scheduler sends several tasks per stage call (`<route>/batch`),
and every task still keeps its own fate: each image exactly once, its own retries and
permanent failures, a busy answer waited out, never counted."""

from __future__ import annotations

from pathlib import Path

from tests.gateway.pipeline.test_scheduler import RunJob, run_job  # noqa: F401 (fixture)
from tests.support.gateway import StageServer, make_settings


def batched(data_dir: Path, url: str, **kw: object) -> object:
    return make_settings(data_dir, url, stage_batch_size=4, matting_concurrency=8,
                         comparison_concurrency=8, **kw)


async def test_every_image_goes_through_once_in_batches(
    run_job: RunJob, stage_server: StageServer, data_dir: Path  # noqa: F811
) -> None:
    paths = [f"d/img{i:02d}.jpg" for i in range(19)]
    job, tasks = await run_job(paths, settings=batched(data_dir, stage_server.url))
    assert job.state == "completed"
    assert all(t.state == "completed" and t.retry_count == 0 for t in tasks)
    # each task once per stage, and they came several to a call
    assert sorted(tid for r, tid in stage_server.calls if r == "matting") == [t.id for t in tasks]
    assert sorted(tid for r, tid in stage_server.calls if r == "compare") == [t.id for t in tasks]
    assert stage_server.batch_calls and all(n <= 4 for _, n in stage_server.batch_calls)
    assert max(n for _, n in stage_server.batch_calls) > 1
    assert len(stage_server.batch_calls) < 2 * len(paths)


async def test_one_bad_image_in_a_batch_fails_alone(
    run_job: RunJob, stage_server: StageServer, data_dir: Path  # noqa: F811
) -> None:
    stage_server.by_input["bad.jpg"] = ["fatal"]
    stage_server.by_input["flaky.jpg"] = ["retryable"]
    stage_server.by_input["busy.jpg"] = ["busy"]
    names = ["a.jpg", "bad.jpg", "flaky.jpg", "busy.jpg", "b.jpg", "c.jpg"]
    job, tasks = await run_job(names, settings=batched(data_dir, stage_server.url))
    by = {t.path: t for t in tasks}
    assert by["bad.jpg"].state == "permanently_failed" and by["bad.jpg"].retry_count == 1
    assert by["flaky.jpg"].state == "completed" and by["flaky.jpg"].retry_count == 1
    assert by["busy.jpg"].state == "completed" and by["busy.jpg"].retry_count == 0
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        assert by[name].state == "completed" and by[name].retry_count == 0
    assert job.state == "completed_with_errors"


async def test_a_refused_batch_call_is_waited_out_for_every_task(
    run_job: RunJob, data_dir: Path  # noqa: F811
) -> None:
    """Nothing listens: the whole call is unreachable, which counts for no task."""
    settings = batched(data_dir, "http://127.0.0.1:9")
    _job, tasks = await run_job(["x.jpg", "y.jpg"], settings=settings,
                               until=lambda j: j.started_at is not None)
    assert all(t.retry_count == 0 for t in tasks)
