"""The consumer loop of one process: blocking batched reads, a pool of handler threads,
heartbeats of in-flight entries, and reclaiming entries of workers that died.

One loop thread reads with XREADGROUP (``COUNT`` = free handler slots, ``BLOCK`` bounded by the
next delayed message's due time) and hands entries to the pool. A second thread heartbeats the
entries in flight every third of the visibility timeout (so a long task stays owned) and, every
half, reclaims entries idle past it (XAUTOCLAIM) from dead consumers.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from stabilize_redis.backend.redis_backend import Delivery, RedisBackend
from stabilize_redis.queue.dispatch import Dispatcher

log = logging.getLogger("stabilize_redis.worker")


def consumer_name() -> str:
    """A consumer name unique to this consumer: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Consumer:
    """Reads and dispatches messages until ``stop()``; safe to run in many processes at once."""

    REPORT_EVERY_S = 30.0

    def __init__(
        self,
        backend: RedisBackend,
        dispatcher: Dispatcher,
        *,
        concurrency: int = 4,
        visibility_timeout: float = 30.0,
        block_ms: int = 1000,
        name: str | None = None,
    ) -> None:
        self.backend = backend
        self.dispatcher = dispatcher
        self.concurrency = max(1, concurrency)
        self.visibility_timeout = visibility_timeout
        self.block_ms = block_ms
        self.name = name or consumer_name()
        self._stop = threading.Event()
        self._inflight: dict[tuple[int, str], Delivery] = {}
        self._lock = threading.Lock()
        self._slot_freed = threading.Condition(self._lock)
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="stz-handler")
        self._threads: list[threading.Thread] = []
        self.processed = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        for target, name in ((self._read_loop, "stz-reader"), (self._maintenance_loop, "stz-heartbeat")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("consumer %s started: concurrency=%d visibility=%.0fs on %s", self.name,
                 self.concurrency, self.visibility_timeout, self.backend.target.describe())

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop reading, let in-flight handlers finish (up to ``timeout``), then return.
        Entries still unfinished stay pending and are reclaimed by another worker."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        deadline = time.monotonic() + (timeout or 0)
        while self.inflight_count() and time.monotonic() < deadline:
            time.sleep(0.02)
        self._pool.shutdown(wait=False, cancel_futures=True)
        log.info("consumer %s stopped (%d processed, %d left in flight)", self.name, self.processed,
                 self.inflight_count())

    @property
    def running(self) -> bool:
        return bool(self._threads) and not self._stop.is_set()

    def inflight_count(self) -> int:
        with self._lock:
            return len(self._inflight)

    # -- loops -------------------------------------------------------------------------------

    def _read_loop(self) -> None:
        next_promote = 0.0
        next_due: float | None = None
        embedded = self.backend.target.embedded
        while not self._stop.is_set():
            try:
                now = time.time()
                if now >= next_promote or (next_due is not None and now >= next_due):
                    next_due = self.backend.promote()
                    next_promote = now + 0.25
                free = self._wait_for_free_slots(0.5)
                if free == 0:
                    continue
                block = self.block_ms
                if next_due is not None:
                    block = max(1, min(block, int((next_due - time.time()) * 1000)))
                block = min(block, int(max(0.001, next_promote - time.time()) * 1000) + 1)
                # COUNT applies per stream, so a read may return more entries than free slots;
                # the surplus waits in the pool's queue (in flight, heartbeated) - bounded by
                # the number of partitions.
                count = max(1, -(-free // self.backend.keys.partitions))
                deliveries = self.backend.fetch(self.name, count, None if embedded else block)
                if not deliveries and embedded:
                    self._stop.wait(0.002)
                for delivery in deliveries:
                    self._submit(delivery)
            except Exception:  # noqa: BLE001 - Redis down or similar: keep the worker alive
                log.exception("read loop error; retrying in 1s")
                self._stop.wait(1.0)

    def _wait_for_free_slots(self, timeout: float) -> int:
        """Free handler slots, waiting up to ``timeout`` for one when all are busy."""
        with self._slot_freed:
            if len(self._inflight) >= self.concurrency:
                self._slot_freed.wait(timeout)
            return max(0, self.concurrency - len(self._inflight))

    def _submit(self, delivery: Delivery) -> None:
        with self._lock:
            self._inflight[(delivery.partition, delivery.entry_id)] = delivery
        self._pool.submit(self._run, delivery)

    def _run(self, delivery: Delivery) -> None:
        try:
            self.dispatcher.dispatch(delivery)
            self.processed += 1
        except Exception:  # noqa: BLE001 - Redis errors: the entry stays pending and is reclaimed
            log.exception("dispatch of entry %s failed; it will be redelivered", delivery.entry_id)
        finally:
            with self._slot_freed:
                self._inflight.pop((delivery.partition, delivery.entry_id), None)
                self._slot_freed.notify()

    def _maintenance_loop(self) -> None:
        beat = max(0.1, self.visibility_timeout / 3)
        reclaim_every = max(0.2, self.visibility_timeout / 2)
        next_reclaim = time.monotonic() + reclaim_every
        next_report, reported = time.monotonic() + self.REPORT_EVERY_S, 0
        while not self._stop.wait(beat):
            if time.monotonic() >= next_report:
                done = self.processed
                if done != reported:
                    log.info("consumer %s: %d messages in the last %.0fs (%d in total), %d in flight",
                             self.name, done - reported, self.REPORT_EVERY_S, done, self.inflight_count())
                next_report, reported = time.monotonic() + self.REPORT_EVERY_S, done
            try:
                with self._lock:
                    inflight = list(self._inflight.values())
                self.backend.heartbeat(self.name, inflight)
                if time.monotonic() >= next_reclaim:
                    next_reclaim = time.monotonic() + reclaim_every
                    self._reclaim()
            except Exception:  # noqa: BLE001
                log.exception("heartbeat/reclaim error")

    def _reclaim(self) -> None:
        for delivery in self.backend.reclaim(self.name, int(self.visibility_timeout * 1000)):
            with self._lock:
                if (delivery.partition, delivery.entry_id) in self._inflight:
                    continue
            log.warning("reclaimed entry %s (partition %d, delivered %d times) from a dead worker",
                        delivery.entry_id, delivery.partition, delivery.delivered)
            self._submit(delivery)
