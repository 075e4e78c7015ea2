"""stabilize's ``persistence.store`` names for this engine's store: ``WorkflowStore`` is
``RedisWorkflowStore``, ``StoreTransaction`` its transaction."""

from stabilize_redis.persistence.errors import WorkflowNotFoundError
from stabilize_redis.persistence.redis_store import RedisWorkflowStore, WorkflowCriteria
from stabilize_redis.persistence.transaction import RedisStoreTransaction

WorkflowStore = RedisWorkflowStore
StoreTransaction = RedisStoreTransaction

__all__ = ["StoreTransaction", "WorkflowCriteria", "WorkflowNotFoundError", "WorkflowStore"]
