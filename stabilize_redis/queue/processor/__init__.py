"""The queue processor (``QueueProcessor``) and its stabilize settings (``QueueProcessorConfig``,
also at ``stabilize_redis.queue.processor.config``)."""

from stabilize_redis.queue.processor.config import QueueProcessorConfig
from stabilize_redis.queue.processor.processor import QueueProcessor

__all__ = ["QueueProcessor", "QueueProcessorConfig"]
