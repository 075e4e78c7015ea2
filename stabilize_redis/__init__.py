"""stabilize-redis: stabilize's workflow model on Redis streams and Lua.

Workflow code written for stabilize runs unchanged; only the lines that build the store and
queue differ (``RedisWorkflowStore``/``RedisQueue``, or one ``connect(url)``).
"""

from stabilize_redis.client import Client, connect
from stabilize_redis.config import EngineConfig
from stabilize_redis.errors import (
    ConcurrencyError,
    PermanentError,
    TaskError,
    TransientError,
    is_permanent,
    is_transient,
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
from stabilize_redis.queue.processor import QueueProcessor
from stabilize_redis.queue.redis_queue import RedisQueue
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
    "CallableTask", "CancellationToken", "Client", "ConcurrencyError", "EngineConfig", "JoinType",
    "MultiInstanceConfig", "NoOpTask", "Orchestrator", "PermanentError", "QueueProcessor",
    "RedisQueue", "RedisWorkflowStore", "RetryableTask", "SkippableTask", "SplitType",
    "StageExecution", "SyntheticStageOwner", "Task", "TaskCancelledError", "TaskError",
    "TaskExecution", "TaskRegistry", "TaskResult", "TransientError", "WaitTask", "Workflow",
    "WorkflowNotFoundError", "WorkflowStatus", "WorkflowValidationError", "connect",
    "is_cancellation_requested", "is_permanent", "is_transient", "raise_if_cancellation_requested",
]
