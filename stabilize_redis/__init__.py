"""stabilize-redis: stabilize's workflow model on Redis streams and Lua.

Workflow code written for stabilize runs unchanged; only the lines that build the store and
queue differ (``RedisWorkflowStore``/``RedisQueue``, or one ``connect(url)``).
"""

from stabilize_redis.client import Client, connect
from stabilize_redis.config import EngineConfig
from stabilize_redis.context import StageContext
from stabilize_redis.errors import (
    ConcurrencyError,
    PermanentError,
    RecoveryError,
    TaskError,
    TransientError,
    TransientVerificationError,
    is_permanent,
    is_transient,
)
from stabilize_redis.handlers import (
    CancelStageHandler,
    CompleteStageHandler,
    CompleteTaskHandler,
    CompleteWorkflowHandler,
    RunTaskHandler,
    SkipStageHandler,
    StabilizeHandler,
    StartStageHandler,
    StartTaskHandler,
    StartWorkflowHandler,
)
from stabilize_redis.models import (
    JoinType,
    MultiInstanceConfig,
    SplitType,
    StageExecution,
    SyntheticStageOwner,
    TaskExecution,
    Workflow,
    WorkflowStatus,
)
from stabilize_redis.orchestrator import Orchestrator
from stabilize_redis.persistence.redis_store import RedisWorkflowStore, WorkflowNotFoundError
from stabilize_redis.queue.processor import QueueProcessor, QueueProcessorConfig
from stabilize_redis.queue.redis_queue import RedisQueue
from stabilize_redis.recovery import RecoveryResult, WorkflowRecovery, recover_on_startup
from stabilize_redis.resilience.cancellation import (
    CancellationToken,
    TaskCancelledError,
    is_cancellation_requested,
    raise_if_cancellation_requested,
)
from stabilize_redis.tasks import (
    CallableTask,
    NoOpTask,
    RetryableTask,
    SkippableTask,
    Task,
    TaskRegistry,
    TaskResult,
    WaitTask,
)
from stabilize_redis.validation import WorkflowValidationError

__version__ = "0.1.0"

__all__ = [
    "CallableTask", "CancelStageHandler", "CancellationToken", "Client", "CompleteStageHandler",
    "CompleteTaskHandler", "CompleteWorkflowHandler", "ConcurrencyError", "EngineConfig", "JoinType",
    "MultiInstanceConfig", "NoOpTask", "Orchestrator", "PermanentError", "QueueProcessor",
    "QueueProcessorConfig", "RecoveryError", "RecoveryResult", "RedisQueue", "RedisWorkflowStore",
    "RetryableTask", "RunTaskHandler", "SkipStageHandler", "SkippableTask", "SplitType",
    "StabilizeHandler", "StageContext", "StageExecution", "StartStageHandler", "StartTaskHandler",
    "StartWorkflowHandler", "SyntheticStageOwner", "Task", "TaskCancelledError", "TaskError",
    "TaskExecution", "TaskRegistry", "TaskResult", "TransientError", "TransientVerificationError",
    "WaitTask", "Workflow", "WorkflowNotFoundError", "WorkflowRecovery", "WorkflowStatus",
    "WorkflowValidationError", "connect", "is_cancellation_requested", "is_permanent", "is_transient",
    "raise_if_cancellation_requested", "recover_on_startup",
]
