"""Cooperative cancellation across processes: a thread that listens on the namespace's cancel
channel and cancels the token of any listed task running in this process."""

from __future__ import annotations

import logging
import threading

from stabilize_redis.backend.redis_backend import RedisBackend
from stabilize_redis.handlers.task_execution import TokenRegistry

log = logging.getLogger("stabilize_redis.worker")


class CancelListener:
    def __init__(self, backend: RedisBackend, tokens: TokenRegistry) -> None:
        self.backend = backend
        self.tokens = tokens
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
        while not self._stop.is_set():
            pubsub = self.backend.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.backend.keys.cancel_channel)
                while not self._stop.is_set():
                    msg = pubsub.get_message(timeout=0.5)
                    if msg and msg.get("type") == "message":
                        task_id = msg["data"].decode() if isinstance(msg["data"], bytes) else str(msg["data"])
                        if self.tokens.cancel(task_id):
                            log.info("cancellation requested for running task %s", task_id)
            except Exception:  # noqa: BLE001 - reconnect after a Redis hiccup
                log.exception("cancel listener error; resubscribing")
                self._stop.wait(1.0)
            finally:
                pubsub.close()
