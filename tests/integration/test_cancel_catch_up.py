"""A cancellation published while a worker's listener was not subscribed (at its start, during
an outage) still reaches the running task: the listener catches up from the committed state each
time its subscription is confirmed."""

from __future__ import annotations

from stabilize_redis import StageExecution, Task, TaskResult, WorkflowStatus
from stabilize_redis.handlers.task_execution import TokenRegistry
from stabilize_redis.queue.cancel_listener import CancelListener
from stabilize_redis.queue.messages import CancelStage
from tests.integration.support import make_engine, make_stage, make_workflow, stage_named, wait_until

Target = tuple[str | None, str]


class Polls(Task):
    def execute(self, stage: StageExecution) -> TaskResult:
        return TaskResult.running()


def test_a_cancel_missed_while_unsubscribed_is_caught_up_from_the_committed_state(target: Target) -> None:
    eng = make_engine(target)
    eng.registry.register("polls", Polls())
    wf = make_workflow(make_stage("slow", "polls"), make_stage("other", "polls"))
    eng.start(wf)
    wait_until(lambda: eng.processor.process_one() is not None
               and all(s.status == WorkflowStatus.RUNNING for s in eng.store.retrieve(wf.id).stages), 10,
               "both tasks to run")
    slow, other = stage_named(eng.store.retrieve(wf.id), "slow"), stage_named(eng.store.retrieve(wf.id), "other")
    tokens = TokenRegistry()  # as if both tasks were executing in this process
    slow_token = tokens.open(slow.tasks[0].id, (wf.id, slow.id))
    other_token = tokens.open(other.tasks[0].id, (wf.id, other.id))
    eng.processor.dispatcher.handlers[CancelStage].handle(CancelStage(execution_id=wf.id, stage_id=slow.id,
                                                                      message_id="cancel-slow"))
    listener = CancelListener(eng.processor.backend, tokens)  # never subscribed when it was published
    assert listener.catch_up() == 1
    assert slow_token.is_cancelled and not other_token.is_cancelled
    assert listener.catch_up() == 0, "a token is canceled once"
