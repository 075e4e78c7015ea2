"""Cooperative cancellation across processes: a thread that listens on the namespace's cancel
channel and cancels the token of any listed task running in this process.

When Redis goes away the listener resubscribes with capped exponential backoff and logs one
line per state change (``stabilize_redis.outage``). Cancellations published while it is
disconnected do not reach running tasks' tokens (pub/sub keeps no history); the canceled state
itself is committed in Redis either way."""

from __future__ import annotations

import logging
import threading

from stabilize_redis.backend.redis_backend import RedisBackend
from stabilize_redis.handlers.task_execution import TokenRegistry
from stabilize_redis.outage import Backoff, OutageLog

log = logging.getLogger("stabilize_redis.worker")


class CancelListener:
    def __init__(self, backend: RedisBackend, tokens: TokenRegistry) -> None:
        self.backend = backend
        self.tokens = tokens
        self.outage = OutageLog(log, "cancel listener")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="stz-cancel", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None

    def _run(self) -> None:
        backoff = Backoff()
        while not self._stop.is_set():
            pubsub = self.backend.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.backend.keys.cancel_channel)
                while not self._stop.is_set():
                    msg = pubsub.get_message(timeout=0.5)
                    self.outage.ok()
                    backoff.reset()
                    if msg and msg.get("type") == "message":
                        task_id = msg["data"].decode() if isinstance(msg["data"], bytes) else str(msg["data"])
                        if self.tokens.cancel(task_id):
                            log.info("cancellation requested for running task %s", task_id)
            except Exception as e:  # noqa: BLE001 - Redis hiccup: resubscribe after a backoff
                self.outage.failed(e)
                self._stop.wait(backoff.next())
            finally:
                try:
                    pubsub.close()
                except Exception as e:  # noqa: BLE001 - closing a broken connection
                    log.debug("closing the cancel subscription failed: %s", e)
