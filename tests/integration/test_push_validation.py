"""A message no worker could take is refused when it is pushed, naming the field, and nothing
is enqueued — instead of being dead-lettered later or carrying a NUL into stored state."""

from __future__ import annotations

import pytest

import stabilize_redis
from stabilize_redis.queue.messages import CancelWorkflow, JumpToStage
from tests.integration.support import make_stage, make_workflow


@pytest.mark.parametrize("message, field", [
    (lambda wid: CancelWorkflow(execution_id=wid, user="ops", reason="roll\x00back"), "reason"),
    (lambda wid: JumpToStage(execution_id=wid, stage_id="s", target_stage_ref_id="a",
                             jump_context={"x": float("nan")}), "jump_context.x"),
    (lambda wid: JumpToStage(execution_id=wid, stage_id="s", target_stage_ref_id="a",
                             jump_context={"blob": "x" * (1 << 20)}), "exceeds the limit"),
])
def test_a_message_no_worker_could_take_is_refused_at_push(target: tuple[str | None, str], message, field) -> None:
    url, namespace = target
    client = stabilize_redis.connect(url, namespace, dsn="")
    wf = make_workflow(make_stage("a"))
    client.submit(wf)
    before = client.backend.size()
    with pytest.raises(ValueError, match=field):
        client.queue.push(message(wf.id))
    assert client.backend.size() == before, "nothing was enqueued"
