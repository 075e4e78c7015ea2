"""Cancel regions with two worker processes x four threads on real Redis: the tasks of a
canceled region that were running see their cancellation tokens (recorded in Redis by the
tasks themselves, in whichever process runs them), ``on_cancel`` is called for each, and no
region stage runs after the cancel commit."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, cast

import redis

from stabilize_redis import StageExecution, TaskExecution, Workflow, WorkflowStatus, connect
from stabilize_redis.client import Client
from tests.integration.support import wait_until
from tests.processes import worker_pool

RealTarget = tuple[str, str]


def workers(url: str, ns: str, count: int = 2):  # type: ignore[no-untyped-def]
    """Two CLI workers (four threads each) serving ``tests.processes.region_app:registry``."""
    return worker_pool.workers(url, ns, "tests.processes.region_app:registry", count)
ROOT = Path(__file__).resolve().parents[2]


def stage(ref: str, task: str, requires: tuple[str, ...] = (), region: str | None = None) -> StageExecution:
    return StageExecution(ref_id=ref, type=ref, name=ref, requisite_stage_ref_ids=set(requires), cancel_region=region,
                          tasks=[TaskExecution.create(name=ref, implementing_class=task, stage_start=True,
                                                      stage_end=True)])


def members(raw: redis.Redis, key: str) -> set[str]:
    found: set[bytes] = raw.smembers(key)  # type: ignore[assignment]
    return {m.decode() for m in found}


def started_both(raw: redis.Redis, ns: str, workflow_id: str) -> bool:
    return members(raw, f"{ns}:test:started:{workflow_id}") == {"r1", "r2"}


def region_events(client: Client, workflow_id: str) -> list[dict[str, Any]]:
    return [cast(dict[str, Any], e) for e in client.events(workflow_id) if e["event_type"] == "region.canceled"]


def exec_counts(raw: redis.Redis, ns: str, workflow_id: str) -> dict[str, int]:
    found: dict[bytes, bytes] = raw.hgetall(f"{ns}:test:exec:{workflow_id}")  # type: ignore[assignment]
    return {k.decode(): int(v) for k, v in found.items()}


def test_a_canceled_regions_running_tasks_see_their_tokens_across_processes(real_target: RealTarget) -> None:
    url, ns = real_target
    raw = redis.Redis.from_url(url)
    client = connect(url, ns)
    # per workflow two running region stages (6 of the 8 task threads), a region stage that can
    # start only after one of them, and a branch outside the region that must still finish
    workflows = [Workflow.create(application="itest", name="region race", stages=[
        stage("root", "quick"), stage("r1", "until_canceled", ("root",), "ev"),
        stage("r2", "until_canceled", ("root",), "ev"), stage("r_after", "quick", ("r1",), "ev"),
        stage("other", "quick", ("root",)), stage("final", "quick", ("other",)),
    ]) for _ in range(3)]
    with workers(url, ns):
        for wf in workflows:
            client.submit(wf)
        for wf in workflows:
            wait_until(partial(started_both, raw, ns, wf.id), 60, f"the region tasks of {wf.id} to run")
        at_cancel: dict[str, dict[str, int]] = {}
        for wf in workflows:
            client.cancel_region(wf.id, "ev")
        for wf in workflows:
            wait_until(partial(region_events, client, wf.id), 30, f"the cancel commit of {wf.id}")
            at_cancel[wf.id] = exec_counts(raw, ns, wf.id)
        done = [client.wait(wf.id, timeout=60) for wf in workflows]
    for wf in done:
        statuses = {s.ref_id: s.status for s in wf.stages}
        assert wf.status == WorkflowStatus.CANCELED, (wf.id, statuses)
        assert statuses == {"root": WorkflowStatus.SUCCEEDED, "r1": WorkflowStatus.CANCELED,
                            "r2": WorkflowStatus.CANCELED, "r_after": WorkflowStatus.CANCELED,
                            "other": WorkflowStatus.SUCCEEDED, "final": WorkflowStatus.SUCCEEDED}, wf.id
        assert members(raw, f"{ns}:test:token:{wf.id}") == {"r1", "r2"}, "each running region task saw its token"
        assert members(raw, f"{ns}:test:on_cancel:{wf.id}") == {"r1", "r2"}
        runs = exec_counts(raw, ns, wf.id)
        region_runs = {r: n for r, n in runs.items() if r in ("r1", "r2", "r_after")}
        assert region_runs == {"r1": 1, "r2": 1}, (wf.id, runs)
        assert {r: at_cancel[wf.id].get(r, 0) for r in region_runs} == region_runs, \
            "no region stage ran after the cancel commit"
        events = region_events(client, wf.id)
        assert len(events) == 1 and sorted(events[0]["data"]["stages"]) == ["r1", "r2", "r_after"]
