"""One handler per message type; ``default_handlers`` builds the full set."""

from __future__ import annotations

from stabilize_redis.handlers.add_multi_instance import AddMultiInstanceHandler
from stabilize_redis.handlers.base import Handler, HandlerContext
from stabilize_redis.handlers.cancel_region import CancelRegionHandler
from stabilize_redis.handlers.complete_stage import CompleteStageHandler
from stabilize_redis.handlers.complete_task import CompleteTaskHandler
from stabilize_redis.handlers.complete_workflow import CompleteWorkflowHandler
from stabilize_redis.handlers.concurrency_limit import (
    LimitAcquireHandler,
    LimitDecisionHandler,
    LimitReleaseHandler,
    StartWaitingWorkflowsHandler,
)
from stabilize_redis.handlers.continue_parent_stage import ContinueParentStageHandler
from stabilize_redis.handlers.control import (
    CancelStageHandler,
    CancelWorkflowHandler,
    PauseTaskHandler,
    ResumeStageHandler,
)
from stabilize_redis.handlers.global_mutex import (
    GlobalMutexAcquireHandler,
    GlobalMutexGrantedHandler,
    GlobalMutexReleaseHandler,
)
from stabilize_redis.handlers.jump_to_stage import JumpToStageHandler
from stabilize_redis.handlers.relay import RelayHandler
from stabilize_redis.handlers.restart_stage import RestartStageHandler
from stabilize_redis.handlers.run_task import RunTaskHandler
from stabilize_redis.handlers.signal_stage import SignalStageHandler
from stabilize_redis.handlers.skip_stage import SkipStageHandler
from stabilize_redis.handlers.stabilize_handler import StabilizeHandler
from stabilize_redis.handlers.start_stage import StartStageHandler
from stabilize_redis.handlers.start_sub_workflow import StartSubWorkflowHandler
from stabilize_redis.handlers.start_task import StartTaskHandler
from stabilize_redis.handlers.start_workflow import StartWorkflowHandler

HANDLER_CLASSES: tuple[type[Handler], ...] = (
    StartWorkflowHandler, StartStageHandler, StartTaskHandler, RunTaskHandler, CompleteTaskHandler,
    CompleteStageHandler, CompleteWorkflowHandler, SkipStageHandler, CancelWorkflowHandler,
    CancelStageHandler, PauseTaskHandler, ResumeStageHandler, JumpToStageHandler, RestartStageHandler,
    ContinueParentStageHandler, SignalStageHandler, CancelRegionHandler, AddMultiInstanceHandler,
    StartSubWorkflowHandler, RelayHandler, LimitAcquireHandler, LimitReleaseHandler, LimitDecisionHandler,
    StartWaitingWorkflowsHandler, GlobalMutexAcquireHandler, GlobalMutexReleaseHandler, GlobalMutexGrantedHandler,
)




def default_handlers(ctx: HandlerContext) -> dict[type, Handler]:
    return {cls.message_type: cls(ctx) for cls in HANDLER_CLASSES}


__all__ = ["HANDLER_CLASSES", "Handler", "HandlerContext", "StabilizeHandler", "default_handlers",
           *[c.__name__ for c in HANDLER_CLASSES]]
