"""Canceling a workflow reaches the task running in another worker process through its
cooperative cancellation token."""

from __future__ import annotations

import signal
import subprocess

import redis

from stabilize_redis import StageExecution, TaskExecution, Workflow, WorkflowStatus, connect
from tests.processes.test_worker_kill import start_worker, wait_for


def test_cancel_signals_the_token_of_a_task_running_in_another_process(real_target: tuple[str, str]) -> None:
    url, ns = real_target
    client = connect(url, ns)
    raw = redis.Redis.from_url(url)
    worker = start_worker(url, ns, visibility=5.0)
    try:
        wf = Workflow.create(application="cancel-test", name="cancel", stages=[
            StageExecution(ref_id="long", type="wait", name="long", tasks=[
                TaskExecution.create(name="long", implementing_class="wait_for_cancel",
                                     stage_start=True, stage_end=True)]),
            StageExecution(ref_id="after", type="work", name="after", requisite_stage_ref_ids={"long"},
                           tasks=[TaskExecution.create(name="after", implementing_class="work",
                                                       stage_start=True, stage_end=True)]),
        ])
        client.submit(wf)
        key = f"{ns}:test:cancel:{wf.id}"
        wait_for(lambda: raw.hexists(key, "running"), 30, "the long task to run")
        client.cancel(wf.id, user="ops", reason="test")
        result = client.wait(wf.id, timeout=30)
        wait_for(lambda: raw.hexists(key, "saw_cancel"), 10, "the task to see its token cancelled")
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
    assert result.status == WorkflowStatus.CANCELED
    assert result.canceled_by == "ops"
    stages = {s.ref_id: s.status for s in result.stages}
    assert stages["long"] == WorkflowStatus.CANCELED
    assert stages["after"] == WorkflowStatus.CANCELED  # never started, canceled with the workflow
    assert not raw.hgetall(f"{ns}:test:exec:{wf.id}")  # its task never ran
