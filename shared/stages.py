"""The two stages as one type: everything that makes the matting stage differ from the
comparison stage (route, service names, settings, task states, database columns) is in the
table below, so the balancer, the worker server and the scheduler are each written once and
take a `Stage`. The values are the wire names: a `Stage` serialises as "matting" or
"comparison", as stored in `tasks.failed_stage` and used in metric labels and worker ids."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from shared.settings import Settings
from shared.states import TaskState
from shared.storage import (
    COMPARE_SUFFIX,
    FINAL_RESULTS,
    INPUT,
    MATTING_OUTPUT,
    PNG_SUFFIX,
    Storage,
)

__all__ = ["BATCH_ROUTE_SUFFIX", "Stage", "StageColumns"]

BATCH_ROUTE_SUFFIX = "/batch"
"""Appended to a stage's route: the endpoint for a `StageBatch` (balancer and worker)."""


class Stage(StrEnum):
    """One pipeline stage; members are in pipeline order (iterate `Stage` for both)."""

    MATTING = "matting"
    """Image → cut-out(s): the matting API and its workers."""
    COMPARISON = "comparison"
    """Image + cut-out(s) (+ ground truth) → comparison sheet and metrics."""

    @property
    def route(self) -> str:
        """The stage endpoint on its balancer and on its workers."""
        return _SPECS[self].route

    @property
    def api_service(self) -> str:
        """The balancer's service name (logs, metrics, /health): `<stage>_api`."""
        return f"{self.value}_api"

    @property
    def worker_package(self) -> str:
        """The worker's package (`python -m <stage>_worker`), also its argparse prog."""
        return f"{self.value}_worker"

    def api_port(self, s: Settings) -> int:
        return _SPECS[self].api_port(s)

    def worker_port(self, s: Settings) -> int:
        """The first local worker's port; further local workers count up from it."""
        return _SPECS[self].worker_port(s)

    def api_url(self, s: Settings) -> str:
        """The balancer's URL: where the gateway sends tasks and workers send heartbeats."""
        return _SPECS[self].api_url(s)

    def stage_url(self, s: Settings) -> str:
        """The balancer's stage endpoint, as the gateway calls it."""
        return self.api_url(s).rstrip("/") + self.route

    @property
    def batch_route(self) -> str:
        """The endpoint that takes several requests at once (`shared.schemas.StageBatch`)."""
        return self.route + BATCH_ROUTE_SUFFIX

    def batch_url(self, s: Settings) -> str:
        """The balancer's batch endpoint, as the gateway calls it."""
        return self.api_url(s).rstrip("/") + self.batch_route

    def local_workers(self, s: Settings) -> int:
        """How many workers of this stage the local stack starts."""
        return _SPECS[self].local_workers(s)

    def concurrency(self, s: Settings) -> int:
        """Requests the gateway keeps in flight to this stage (at least one)."""
        return max(1, _SPECS[self].concurrency(s))

    @property
    def queued_state(self) -> TaskState:
        """The state a task waits in for this stage."""
        return _SPECS[self].queued

    @property
    def dispatched_state(self) -> TaskState:
        """The state of a task leased to this stage."""
        return _SPECS[self].dispatched

    @property
    def done_state(self) -> TaskState:
        """The state a task moves to once this stage succeeded."""
        return _SPECS[self].done

    @property
    def columns(self) -> StageColumns:
        """The `tasks` columns this stage writes (gateway.db.tables.Task)."""
        return _SPECS[self].columns

    @property
    def output_folder(self) -> str:
        """The DATA_DIR folder this stage writes into, one sub-folder per job."""
        return _SPECS[self].output_folder

    @property
    def output_suffix(self) -> str:
        """How every main output of this stage ends (`.png`, `_compare.jpg`)."""
        return _SPECS[self].output_suffix

    def output_target(self, storage: Storage, job_id: str, rel: str,
                      suffix: str | None = None) -> Path | str:
        """Where a worker of this stage may write `rel` for `job_id`: only below
        `<output_folder>/<job_id>/`, ending `suffix` (default: the stage's own). Anything else
        (the task database, another job, a `.html` page under final_results/) is
        `PathNotAllowed`: a 400 the gateway does not retry. The same rule on S3 as on disk
        (`Storage.job_target`): the resolved file on DATA_DIR (the fast path, written with no
        second resolve), the checked key on S3."""
        return storage.job_target(rel, self.output_folder, job_id,
                                  self.output_suffix if suffix is None else suffix)

    @staticmethod
    def input_target(storage: Storage, job_id: str, rel: str) -> Path | str:
        """Where a worker may read a job's upload (image, ground truth): `input/<job_id>/…`,
        as a file on DATA_DIR or a key on S3 (`Storage.job_target`)."""
        return storage.job_target(rel, INPUT, job_id)

    @property
    def next(self) -> Stage | None:
        """The stage a task goes to after this one; None after the last."""
        order = list(Stage)
        i = order.index(self)
        return order[i + 1] if i + 1 < len(order) else None


@dataclass(frozen=True)
class StageColumns:
    """Names of the per-stage columns of `tasks` (checked against the table by the tests)."""

    dispatched_at: str
    """The lease fence: written by the claim, matched by the answer."""
    started_at: str
    finished_at: str
    worker: str
    output: str
    """DATA_DIR-relative path of the stage's main output."""


@dataclass(frozen=True)
class _Spec:
    route: str
    api_port: Callable[[Settings], int]
    worker_port: Callable[[Settings], int]
    api_url: Callable[[Settings], str]
    local_workers: Callable[[Settings], int]
    concurrency: Callable[[Settings], int]
    output_folder: str
    output_suffix: str
    queued: TaskState
    dispatched: TaskState
    done: TaskState
    columns: StageColumns


_SPECS: dict[Stage, _Spec] = {
    Stage.MATTING: _Spec(
        route="/matting",
        api_port=lambda s: s.matting_api_port,
        worker_port=lambda s: s.matting_worker_port,
        api_url=lambda s: s.matting_api_url,
        local_workers=lambda s: s.matting_workers,
        concurrency=lambda s: s.matting_concurrency,
        output_folder=MATTING_OUTPUT,
        output_suffix=PNG_SUFFIX,
        queued=TaskState.PENDING,
        dispatched=TaskState.DISPATCHED_MATTING,
        done=TaskState.MATTING_DONE,
        columns=StageColumns(
            dispatched_at="matting_dispatched_at",
            started_at="matting_started_at",
            finished_at="matting_finished_at",
            worker="matting_worker",
            output="matting_output",
        ),
    ),
    Stage.COMPARISON: _Spec(
        route="/compare",
        api_port=lambda s: s.comparison_api_port,
        worker_port=lambda s: s.comparison_worker_port,
        api_url=lambda s: s.comparison_api_url,
        local_workers=lambda s: s.comparison_workers,
        concurrency=lambda s: s.comparison_concurrency,
        output_folder=FINAL_RESULTS,
        output_suffix=COMPARE_SUFFIX,
        queued=TaskState.MATTING_DONE,
        dispatched=TaskState.DISPATCHED_COMPARISON,
        done=TaskState.COMPLETED,
        columns=StageColumns(
            dispatched_at="comparison_dispatched_at",
            started_at="comparison_started_at",
            finished_at="comparison_finished_at",
            worker="comparison_worker",
            output="compare_output",
        ),
    ),
}
"""The one table of what differs between the stages."""
