"""StartSubWorkflow: create and start a child workflow, once.

Handled in the child's partition (relayed there from the parent's outbox when the partitions
differ). The child is built from the message's definition (``models.definition``), checked like
any submit (``validation.validate_workflow``) and launched with its derived id
(``backend.launch``: nothing is written when that id exists, so a redelivered or re-sent
StartSubWorkflow never makes a second child); then the message is acked with its dedup mark.

A definition that cannot be built or is refused (the parent's SubWorkflowTask checks it before
suspending, so this is a definition changed in flight or an engine mismatch) is not dropped:
the parent stage is sent its done signal with status TERMINAL and the error, and fails with it.
"""

from __future__ import annotations

import logging

from stabilize_redis.backend.launch import created_event, launch
from stabilize_redis.backend.redis_backend import Delivery
from stabilize_redis.decisions.sub_workflow import SUB_WORKFLOW_DONE
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.handlers.base import Handler
from stabilize_redis.models.definition import workflow_from_definition
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.queue.messages import Message, SignalStage, StartSubWorkflow
from stabilize_redis.validation import validate_workflow

log = logging.getLogger("stabilize_redis.handlers")


class StartSubWorkflowHandler(Handler):
    message_type = StartSubWorkflow

    def handle(self, message: Message, delivery: Delivery | None = None) -> str:
        assert isinstance(message, StartSubWorkflow)
        child = message.execution_id
        t = Transition(child)
        try:
            wf = workflow_from_definition(message.definition, child)
            validate_workflow(wf)
        except ValueError as e:  # DefinitionError, graph errors, WorkflowValidationError, NotExecutedError
            log.error("child workflow %s of %s cannot start: %s", child, message.parent_execution_id, e)
            t.push(SignalStage(execution_id=message.parent_execution_id, execution_type=message.execution_type,
                               stage_id=message.parent_stage_id, signal_name=SUB_WORKFLOW_DONE, persistent=True,
                               signal_data={"sub_workflow_id": child,
                                            "sub_workflow_status": WorkflowStatus.TERMINAL.name,
                                            "error": f"child workflow cannot start: {e}"}))
            return self.backend.commit(t, message, delivery)
        if not launch(self.backend, wf, created_event(wf)):
            log.info("child workflow %s exists already; StartSubWorkflow %s acked", child, message.message_id)
        return self.backend.commit(t, message, delivery)
