"""Cooperative cancellation across processes: a thread that listens on the namespace's cancel
channel and cancels the token of any listed task running in this process.

When Redis goes away the listener resubscribes with capped exponential backoff and logs one
line per state change (``stabilize_redis.outage``). Pub/sub keeps no history, so a cancellation
published while it was not subscribed (at start, or during an outage) would be missed; each time
its subscription is confirmed it therefore catches up once from the committed state: every task
running here whose task or stage is no longer running, or whose workflow was canceled, has its
token canceled. (A catch-up per subscription, not a poll.)"""

from __future__ import annotations

import logging
import threading

from stabilize_redis.backend.redis_backend import RedisBackend
from stabilize_redis.handlers.task_execution import TokenRegistry
from stabilize_redis.models.status import WorkflowStatus
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

    def catch_up(self) -> int:
        """Cancel the token of every task running here that the committed state says was
        canceled or is over (its task or stage no longer running, its workflow canceled or
        finished); returns how many."""
        canceled = 0
        for task_id, workflow_id, stage_id in self.tokens.running():
            snap = self.backend.read(workflow_id, [stage_id])
            rec = snap.stages.get(stage_id)
            task = next((t for t in rec.stage.tasks if t.id == task_id), None) if rec is not None else None
            over = (snap.meta is None or snap.meta.get("canceled") or WorkflowStatus[snap.meta["status"]].is_complete
                    or task is None or task.status != WorkflowStatus.RUNNING)
            if over and self.tokens.cancel(task_id):
                canceled += 1
                log.info("cancellation of running task %s found on resubscribing", task_id)
        return canceled

    def _run(self) -> None:
        backoff = Backoff()
        while not self._stop.is_set():
            pubsub = self.backend.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.backend.keys.cancel_channel)
                pubsub.get_message(timeout=0.5)  # the subscription's confirmation
                self.catch_up()
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
