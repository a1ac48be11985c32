"""`GET /jobs/{id}/tasks` and `/jobs/{id}/gallery` paged by `after` (keyset): every task once,
in id order, the last page's `next_after` null; `offset` still works; a bad cursor is a 422."""

from __future__ import annotations

from collections.abc import Callable

from tests.support.gateway import Gateway, seed


def test_keyset_pages_walk_every_task_once(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway()
    seed(gw.settings, [{"id": "j1", "state": "running", "total": 23},
                       {"id": "j2", "state": "running", "total": 5}],
         [{"job_id": j, "path": f"{j}/{i:02d}.png", "input": "", "state": st}
          for j, n in (("j1", 23), ("j2", 5))
          for i in range(n)
          for st in (("completed" if i % 2 else "pending"),)])
    for route in ("tasks", "gallery"):
        seen: list[int] = []
        after: int | None = None
        pages = 0
        while True:
            params: dict[str, int] = {"limit": 5}
            if after is not None:
                params["after"] = after
            r = gw.client.get(f"/jobs/j1/{route}", params=params)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["total"] == 23
            ids = [t["id"] for t in body["tasks"]]
            seen += ids
            pages += 1
            after = body["next_after"]
            if after is None:
                break
            assert after == ids[-1]
        assert len(seen) == 23 == len(set(seen)) and seen == sorted(seen), route
        assert pages == 5
    # one state only, and offset as before
    done = gw.client.get("/jobs/j1/tasks", params={"state": "completed", "limit": 100}).json()
    assert done["total"] == 11 and all(t["state"] == "completed" for t in done["tasks"])
    by_offset = gw.client.get("/jobs/j1/tasks", params={"offset": 20, "limit": 5}).json()
    assert [t["id"] for t in by_offset["tasks"]] == seen[20:]


def test_a_bad_cursor_is_refused(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway()
    seed(gw.settings, [{"id": "j1", "state": "running", "total": 0}], [])
    for bad in ("-1", "x", str(2**63)):
        r = gw.client.get("/jobs/j1/tasks", params={"after": bad})
        assert r.status_code == 422 and r.json()["detail"], bad
    beyond = gw.client.get("/jobs/j1/tasks", params={"after": 10**9}).json()
    assert beyond["tasks"] == [] and beyond["next_after"] is None
