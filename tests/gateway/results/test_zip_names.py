"""A finished job's zip leaves a repeated name out while holding only the names that can still
come again (`gateway.results.zip_names`): the same zip as with every name kept, on paths made
to collide (`a.jpg`/`a.png`, `x.m.jpg` against model m's `x.m.png`, `x.alpha.jpg` against
`x.jpg`'s matte), with rows between the two; rows out of order fall back to every name; the
three-column pages walk every row once; a file swapped for a symlink after sizing is never
followed."""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import random
import zipfile
from pathlib import Path

import pytest

from gateway.db.database import Database
from gateway.db.tables import Task
from gateway.results.pages import output_pages, output_pages_here, task_pages
from gateway.results.report import REPORT_FILES
from gateway.results.zip_names import OutOfOrder, WindowNames, tag_spread
from gateway.results.zip_stream import build_zip, task_members, zip_chunks
from shared.storage import Storage, model_output_rel
from tests.support.gateway import seed

STEMS = ["a", "a.b", "a.m", "a.alpha", "a.jpg", "ab", "a-1", "b"]
EXTS = [".jpg", ".png", ".m.png", ".x.jpg"]


def _colliding_paths() -> list[str]:
    """Paths whose output names collide in every way ingest refuses now (rows made before)."""
    return sorted({f"{d}{s}{e}" for d in ("", "d/") for s in STEMS for e in EXTS})


def _lay_out(st: Storage, job: str, paths: list[str], output: str, models: list[str]
             ) -> None:
    """Every output each path can have (a name shared by two paths: one file)."""
    kinds = (False, True) if output == "both" else (False,)
    for path in paths:
        first = st.matting_rel(job, path)
        for i, model in enumerate(models or [""]):
            for alpha in kinds:
                st.objects.put(model_output_rel(first, model, i, alpha), b"c:" + path.encode())
        st.objects.put(st.compare_rel(job, path), b"s:" + path.encode())


def _names(st: Storage, tasks: list[Task], output: str, models: list[str],
           order: list[Task]) -> list[str]:
    z = build_zip(st, "j", output, order, models=models)
    body = b"".join(zip_chunks(z))
    assert len(body) == z.size
    zf = zipfile.ZipFile(io.BytesIO(body))
    assert zf.testzip() is None
    return [n for n in zf.namelist() if n not in REPORT_FILES]


def _expected(st: Storage, tasks: list[Task], output: str, models: list[str]) -> list[str]:
    """The first of each name in walk order: what a set of every name gives."""
    seen: set[str] = set()
    out = []
    for t in tasks:
        for _, name in task_members(st, "j", output, models, t).files:
            if name not in seen:
                seen.add(name)
                out.append(name)
    return out


@pytest.mark.parametrize(("output", "models"), [("rgba", []), ("both", []),
                                                ("rgba", ["x", "m"]), ("both", ["x", "m"])])
def test_repeated_names_go_in_once_as_with_every_name_kept(
        tmp_path: Path, output: str, models: list[str]) -> None:
    st = Storage(tmp_path)
    paths = _colliding_paths()
    _lay_out(st, "j", paths, output, models)
    tasks = [Task(job_id="j", path=p, state="completed") for p in paths]
    expected = _expected(st, tasks, output, models)
    assert len(expected) < sum(len(task_members(st, "j", output, models, t).files)
                               for t in tasks)  # there are repeats to leave out
    assert _names(st, tasks, output, models, tasks) == expected
    # out of path order (a collation that does not sort by code point): every name kept
    shuffled = tasks[:]
    random.Random(7).shuffle(shuffled)
    assert _names(st, tasks, output, models, shuffled) == _expected(st, shuffled, output,
                                                                    models)


def test_random_paths_in_order_match_a_set_of_every_name() -> None:
    """WindowNames against a plain set on random sorted paths of a tiny alphabet (many
    prefixes shared, many collisions), for every tag spread the zip uses."""
    rng = random.Random(17)
    for output, models, suffix in itertools.product(("rgba", "both"), ([], ["m", "mm"]),
                                                    (".png", ".webp")):
        spread = tag_spread(output, models, suffix)
        kinds = (False, True) if output == "both" else (False,)
        for _ in range(40):
            paths = sorted(
                "".join(rng.choice(["a", ".m", ".mm", ".alpha", ".png", ".", "/a", "b"])
                        for _ in range(rng.randint(1, 5))).strip("/") or "a"
                for _ in range(60))
            window, every = WindowNames(spread), set()
            paths = [p for p in paths if not p.startswith("./")]  # not plain: below
            for path in paths:
                window.advance(path)
                stem = Storage.stem_path(path)
                names = [model_output_rel(f"{stem}{suffix}", m, i, alpha)
                         for i, m in enumerate(models or [""]) for alpha in kinds]
                names.append(f"{stem}_compare.jpg")
                for name in names:
                    assert (name in window) == (name in every), (path, name)
                    window.add(name)
                    every.add(name)


def test_the_window_holds_a_few_names_whatever_the_job_size() -> None:
    window = WindowNames(tag_spread("rgba", [], ".png"))
    for i in range(20_000):
        path = f"f{i // 1000:04d}/image_{i:07d}.png"
        window.advance(path)
        stem = Storage.stem_path(path)
        window.add(f"matting_output/{stem}.png")
        window.add(f"final_results/{stem}_compare.jpg")
        assert window.held <= 4
    with pytest.raises(OutOfOrder):
        window.advance("f0000/image_0000000.png")
    with pytest.raises(OutOfOrder):  # pathlib's `a.png`: its names are not under `./`
        WindowNames(0).advance("./a.png")


def test_a_video_name_is_checked_against_every_row(tmp_path: Path) -> None:
    """Videos come after the rows: their names (`keep`) are remembered however far back."""
    window = WindowNames(0, keep=["final_results/clip_compare.jpg"])
    window.advance("clip.jpg")
    window.add("final_results/clip_compare.jpg")
    for i in range(100):
        window.advance(f"z{i:03d}.png")
        window.add(f"final_results/z{i:03d}_compare.jpg")
    assert "final_results/clip_compare.jpg" in window
    assert "final_results/z000_compare.jpg" not in window  # gone: no later row repeats it


def test_a_file_swapped_for_a_symlink_after_sizing_is_not_followed(tmp_path: Path) -> None:
    st = Storage(tmp_path / "data")
    paths = ["d/a.png", "d/b.png"]
    _lay_out(st, "j", paths, "rgba", [])
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"outside DATA_DIR")
    z = build_zip(st, "j", "rgba", [Task(job_id="j", path=p, state="completed")
                                    for p in paths])
    target = st.resolve(st.matting_rel("j", "d/b.png"))
    target.unlink()
    os.symlink(secret, target)  # same size would not matter: it is never opened
    got = b""
    with pytest.raises(OSError):
        for piece in zip_chunks(z, size=1):
            got += piece
    assert b"outside DATA_DIR" not in got


async def test_output_pages_walk_every_row_once_in_report_order(tmp_path: Path) -> None:
    from shared.settings import Settings

    settings = Settings(data_dir=tmp_path)
    rows = [{"job_id": "j", "path": f"d{i % 3}/img{i:03d}.png",
             "state": "completed" if i % 5 else "failed"} for i in range(50)]
    rows += [{"job_id": "j", "path": "d0/img000.png", "state": "rejected"}]  # same path
    rows += [{"job_id": "other", "path": "d0/x.png", "state": "completed"}]
    seed(settings, [{"id": "j", "state": "completed", "total": 51},
                    {"id": "other", "state": "completed", "total": 1}], rows)
    db = await Database.connect(settings.sqlite_url)
    try:
        light = [r async for page in output_pages(db, "j", size=7) for r in page]
        whole = [t async for page in task_pages(db, "j", size=7) for t in page]
        # the download's zip reads them in its own thread, blocking, a page when it needs one
        here = await asyncio.to_thread(
            lambda: [r for page in output_pages_here(db, "j", size=7) for r in page])
    finally:
        await db.close()
    assert here == light
    assert [(r.path, r.state, r.id) for r in light] == [(t.path, t.state, t.id) for t in whole]
    assert len(light) == 51 and len({r.id for r in light}) == 51
    assert [r.path for r in light] == sorted(r.path for r in light)


def test_a_file_swapped_for_a_fifo_while_sent_fails_the_zip_without_waiting(
        tmp_path: Path) -> None:
    """The two walks' zip (rows without recorded sizes): a FIFO put in a listed file's place
    once the zip is under way has no writer; opening it must not block the zip's thread (it
    would wait forever), and the zip stops short."""
    st = Storage(tmp_path / "data")
    paths = ["d/a.png", "d/b.png"]
    _lay_out(st, "j", paths, "rgba", [])
    z = build_zip(st, "j", "rgba", [Task(job_id="j", path=p, state="completed")
                                    for p in paths])
    target = st.resolve(st.matting_rel("j", "d/b.png"))
    pieces = zip_chunks(z, size=1)
    got = next(pieces)  # the folder is listed, the first member on its way
    target.unlink()
    os.mkfifo(target)
    with pytest.raises(FileNotFoundError, match="no longer a plain file"):
        for piece in pieces:
            got += piece
    assert len(got) < (z.size or 0)
