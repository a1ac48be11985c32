"""The `Stage` table: wire names, settings, task states and the database columns it names."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table

from gateway.db.tables import Task
from shared.settings import Settings
from shared.stages import Stage
from shared.states import TaskState


def test_wire_names_are_unchanged() -> None:
    assert [s.value for s in Stage] == ["matting", "comparison"]  # pipeline order
    assert (Stage.MATTING.route, Stage.COMPARISON.route) == ("/matting", "/compare")
    assert (Stage.MATTING.api_service, Stage.COMPARISON.api_service) == (
        "matting_api", "comparison_api")
    assert (Stage.MATTING.worker_package, Stage.COMPARISON.worker_package) == (
        "matting_worker", "comparison_worker")
    assert Stage("comparison") is Stage.COMPARISON and f"{Stage.MATTING}" == "matting"


def test_settings_are_read_per_stage() -> None:
    s = Settings(matting_api_port=7001, comparison_api_port=7002, matting_worker_port=7101,
                 comparison_worker_port=7201, matting_api_url="http://m:1/",
                 comparison_api_url="http://c:2", matting_workers=3, comparison_workers=0,
                 matting_concurrency=5, comparison_concurrency=0)
    m, c = Stage.MATTING, Stage.COMPARISON
    assert (m.api_port(s), c.api_port(s)) == (7001, 7002)
    assert (m.worker_port(s), c.worker_port(s)) == (7101, 7201)
    assert (m.api_url(s), c.api_url(s)) == ("http://m:1/", "http://c:2")
    assert (m.stage_url(s), c.stage_url(s)) == ("http://m:1/matting", "http://c:2/compare")
    assert (m.local_workers(s), c.local_workers(s)) == (3, 0)
    assert (m.concurrency(s), c.concurrency(s)) == (5, 1)  # at least one in flight


def test_states_chain_the_stages() -> None:
    m, c = Stage.MATTING, Stage.COMPARISON
    assert (m.queued_state, m.dispatched_state, m.done_state) == (
        TaskState.PENDING, TaskState.DISPATCHED_MATTING, TaskState.MATTING_DONE)
    assert (c.queued_state, c.dispatched_state, c.done_state) == (
        TaskState.MATTING_DONE, TaskState.DISPATCHED_COMPARISON, TaskState.COMPLETED)
    assert (m.next, c.next) == (c, None)


def test_every_named_column_exists() -> None:
    table = cast(Table, cast(Any, Task).__table__)
    for stage in Stage:
        cols = stage.columns
        for name in (cols.dispatched_at, cols.started_at, cols.finished_at, cols.worker,
                     cols.output):
            assert name in table.c, (stage, name)
