"""Dynamic mapping on real workers."""
from __future__ import annotations

import flows  # noqa: F401

from qflow.store import read


def test_a_thousand_element_map_reduces_in_order_and_retries_one_element(cluster, tmp_path):
    rt = cluster.runtime()
    run_id = rt.engine.trigger("mapped", {"n": 1000, "factor": 3, "fail_on": 617})
    run = rt.engine.wait(run_id, timeout=180)
    assert run["state"] == "failed"
    with rt.store.read() as conn:
        tasks = {t["node"]: t for t in read.get_run(conn, run_id)["tasks"]}
    assert len([n for n in tasks if n.startswith("scale[")]) == 1000
    assert tasks["scale[617]"]["state"] == "failed"
    assert tasks["scale"]["error"] == "MapError: 1 of 1000 elements failed (scale[617])"

    # The fix: element 617 no longer fails (its stored call is corrected), then retry.
    import json

    from sqlalchemy import update

    from qflow.store.models import tasks as table
    with rt.store.write() as conn:
        conn.execute(update(table).where(table.c.run_id == run_id,
                                         table.c.node == "scale[617]")
                     .values(call=json.dumps({"args": [617, 3], "kwargs": {
                         "offset": {"__qflow_ref__": "const"}}})))
    assert rt.engine.resume(run_id) == 1
    assert rt.engine.wait(run_id, timeout=60)["state"] == "succeeded"
    with rt.store.read() as conn:
        after = {t["node"]: t for t in read.get_run(conn, run_id)["tasks"]}
        values = read.results(conn, run_id, ["scale", "total_of"])
    assert values["scale"] == [i * 3 + 1 for i in range(1000)]
    assert values["total_of"] == sum(i * 3 + 1 for i in range(1000))
    assert after["scale[617]"]["attempts"] == 2
    assert all(after[f"scale[{i}]"]["attempts"] == 1 for i in range(1000) if i != 617)


def test_an_empty_map_on_workers_still_runs_downstream(cluster):
    rt = cluster.runtime()
    run_id = rt.engine.trigger("mapped", {"n": 0})
    assert rt.engine.wait(run_id, timeout=60)["state"] == "succeeded"
    with rt.store.read() as conn:
        assert read.results(conn, run_id, ["total_of"]) == {"total_of": 0}
