"""stabilize's ``stabilize.queue.queue`` import path: ``Queue`` is this engine's RedisQueue."""

from __future__ import annotations

from stabilize_redis.queue.redis_queue import RedisQueue

Queue = RedisQueue

__all__ = ["Queue", "RedisQueue"]
