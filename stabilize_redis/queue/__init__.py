"""The queue: messages, the Redis streams queue and the processor.

``from stabilize_redis.queue import Queue`` (stabilize's name; ``RedisQueue`` here) and
``QueueProcessor`` resolve lazily, on first access: importing them here would be circular
(``queue.messages``, imported by nearly every module, is in this package).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Queue", "QueueProcessor", "RedisQueue"]


def __getattr__(name: str) -> Any:
    if name in ("Queue", "RedisQueue"):
        from stabilize_redis.queue.redis_queue import RedisQueue

        return RedisQueue
    if name == "QueueProcessor":
        from stabilize_redis.queue.processor import QueueProcessor

        return QueueProcessor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
