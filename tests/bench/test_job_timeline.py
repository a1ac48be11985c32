"""bench/job_timeline.py: the gateway's log lines become stage calls and the job's close, and
the CPU samples become each phase's cores busy and idle-core seconds."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from bench.job_timeline import Timeline, _parse_log, phase_table, summary


def _at(t: float) -> str:
    return dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]


def test_the_log_and_samples_give_the_phases(tmp_path: Path) -> None:
    t0 = dt.datetime(2026, 12, 2, 20, 0, 0).timestamp()
    log = tmp_path / "gateway.out"
    rid = "[request_id=j:1:matting:abc job_id=j task_id=1 stage=matting]"
    log.write_text("\n".join([
        f"{_at(t0 - 5)} gateway INFO tasks 1..4 matting batch call: 4 of 4 ok in 900 ms {rid}",
        f"{_at(t0 + 0.2)} gateway INFO ingest: job j: 8 tasks, 8 images (0 videos' frames "
        "among them), 0 with ground truth",
        f"{_at(t0 + 2.0)} gateway INFO tasks 1..4 matting batch call: 4 of 4 ok in 1500 ms {rid}",
        f"{_at(t0 + 3.0)} gateway INFO tasks 5..8 matting batch call: 4 of 4 ok in 2000 ms {rid}",
        f"{_at(t0 + 2.5)} gateway INFO tasks 1..4 comparison batch call: 4 of 4 ok in 500 ms",
        f"{_at(t0 + 3.5)} gateway INFO tasks 5..8 comparison batch call: 4 of 4 ok in 400 ms",
        f"{_at(t0 + 3.6)} gateway INFO job j finished: completed",
    ]) + "\n")
    # one core busy all along, the gateway's, and a second one (the engine's) from 0.5 to 3 s
    samples = [(t0 + k / 10, {"gateway": k / 10,
                              "matting-worker-1": min(max(k / 10 - 0.5, 0.0), 2.5)})
               for k in range(0, 41)]
    tl = Timeline(sent=t0, told=t0 + 3.7, samples=samples)
    _parse_log(log, t0 - 0.01, tl)
    assert tl.calls["matting"] == [(pytest.approx(t0 + 0.5), pytest.approx(t0 + 2.0), 4),
                                   (pytest.approx(t0 + 1.0), pytest.approx(t0 + 3.0), 4)]
    assert len(tl.calls["comparison"]) == 2
    assert tl.finished == pytest.approx(t0 + 3.6)
    names = [(n, round(a - t0, 2), round(b - t0, 2)) for n, a, b in tl.phases()]
    assert names == [("start", 0.0, 0.5), ("lone matting", 0.5, 2.0), ("both", 2.0, 3.0),
                     ("tail", 3.0, 3.5), ("close", 3.5, 3.6), ("told", 3.6, 3.7)]
    s = summary(tl, cores=2, load=0.0)
    by = {p[0]: p for p in s.phases}
    assert by["start"][2] == pytest.approx(1.0)  # the gateway alone
    assert by["start"][3] == pytest.approx(0.5)  # one core idle for 0.5 s
    assert by["both"][2] == pytest.approx(2.0)
    assert by["both"][4]["matting-worker"] == pytest.approx(1.0)
    assert by["tail"][3] == pytest.approx(0.5)  # the engine done: one core idle
    assert s.wall_s == pytest.approx(3.7)
    assert s.idle_core_s == pytest.approx(2 * 3.7 - (3.7 + 2.5))
    table = phase_table([s], 8)
    assert table[0].startswith("| phase |") and len(table) == 2 + 6 + 3
