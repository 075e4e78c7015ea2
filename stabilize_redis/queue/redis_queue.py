"""``RedisQueue``: stabilize's Queue API over a namespace's partitioned streams."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from stabilize_redis.backend.redis_backend import RedisBackend
from stabilize_redis.backend.registry import backend_for
from stabilize_redis.queue.messages import Message


class RedisQueue:
    """Messages of one namespace. ``url=None`` is the embedded in-process default; the same URL
    and namespace as a ``RedisWorkflowStore`` means the same keyspace."""

    def __init__(self, url: str | None = None, namespace: str | None = None, *,
                 partitions: int | None = None) -> None:
        self.backend: RedisBackend = backend_for(url, namespace, partitions)

    def push(self, message: Message, delay: timedelta | float | None = None, connection: Any = None) -> None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay or 0)
        self.backend.push(message, seconds)

    ensure = push

    def size(self) -> int:
        """Messages not yet processed: ready, in flight and delayed."""
        return self.backend.size()

    def counts(self) -> dict[str, int]:
        return self.backend.queue_counts()

    def list_dlq(self, limit: int = 100, message_type: str | None = None) -> list[dict[str, Any]]:
        """Dead letters (see ``RedisBackend.dead_letters`` for the row fields)."""
        rows = self.backend.dead_letters(limit if message_type is None else 100_000)
        if message_type is not None:
            rows = [r for r in rows if r["type"] == message_type][:limit]
        return rows

    def dlq_size(self) -> int:
        return self.backend.queue_counts()["dead"]

    def replay_dlq(self, dlq_id: str, partition: int | None = None) -> bool:
        """Move a dead letter back to its ready stream with its attempts reset; ``dlq_id`` is the
        ``id`` of a ``list_dlq`` row ('PARTITION/ENTRY')."""
        if partition is None:
            part, _, dlq_id = dlq_id.partition("/")
            partition = int(part)
        return self.backend.replay_dead(partition, dlq_id)

    def clear_dlq(self) -> int:
        return self.backend.purge_dead()

    def has_pending_message_for_task(self, task_id: str) -> bool:
        return False

    def close(self) -> None:
        """Nothing to release: connections are pooled per process."""
