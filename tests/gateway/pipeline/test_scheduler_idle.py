"""An idle scheduler polls ever less often; the work this gateway makes wakes it at once
(issue 17, point 4: an idle gateway used to open ten claim transactions a second)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from sqlalchemy import select

from gateway.db.database import Database
from gateway.db.tables import Job, Task
from gateway.pipeline.scheduler import Scheduler
from shared.storage import Storage
from shared.timing import SCHEDULER_IDLE_BACKOFF
from tests.support.gateway import FAST, StageServer, image_tasks, make_settings

NEVER_S = 600.0
"""A first idle wait no test outlasts: whatever runs was woken, not polled for."""


async def test_the_idle_wait_doubles_up_to_its_cap(data_dir: Path, stage_server: StageServer
                                                   ) -> None:
    settings = make_settings(data_dir, stage_server.url)
    db = await Database.open(settings)
    try:
        sched = Scheduler(settings, db, Storage(data_dir), None, **{**FAST, "idle_s": 0.1})
        waits = [0.1]
        for _ in range(8):
            waits.append(sched._next_idle(waits[-1]))
        cap = 0.1 * SCHEDULER_IDLE_BACKOFF
        assert waits[:5] == [0.1, 0.2, 0.4, 0.8, min(1.6, cap)]
        assert waits[-1] == cap and max(waits) == cap
    finally:
        await db.close()


async def test_a_started_job_is_run_by_the_wake_not_the_poll(
    data_dir: Path, stage_server: StageServer
) -> None:
    """Both stage loops first find nothing and sleep NEVER_S; the job that then starts is
    claimed because `wake` says so (as the end of an ingest does), and its comparison tasks
    because each matting answer wakes the comparison loop."""
    settings = make_settings(data_dir, stage_server.url)
    db = await Database.open(settings)
    storage = Storage(data_dir)
    sched = Scheduler(settings, db, storage, None, **{**FAST, "idle_s": NEVER_S})
    await sched.start()
    try:
        await asyncio.sleep(0.5)  # both loops have claimed nothing and sleep now
        assert not stage_server.calls
        paths = [f"img{i}.jpg" for i in range(5)]
        async with db.write() as s:
            s.add(Job(id="job1", state="running", total=len(paths)))
            await s.flush()
            for row in image_tasks(storage, "job1", paths):
                s.add(Task(**row))
        sched.wake()
        deadline = time.time() + 60
        while True:
            async with db.read() as s:
                states = list((await s.execute(select(Task.state))).scalars())
            if states and all(st == "completed" for st in states):
                break
            assert time.time() < deadline, states
            await asyncio.sleep(0.05)
    finally:
        await sched.stop()
        await db.close()
    assert len(states) == 5
