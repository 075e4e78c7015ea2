"""The consumer loop of one process: blocking batched reads, a pool of handler threads,
heartbeats of in-flight entries, reclaiming entries of workers that died, and removing the
consumer entries of workers that are gone.

One loop thread reads with XREADGROUP (``COUNT`` from the free handler slots, ``BLOCK`` bounded
by the next delayed message's due time; entries beyond the free slots are handed back to their
streams at once, ``lua/hand_back.lua``) and promotes due delayed messages. A worker never holds
more entries than it can run: what it holds is running. A second thread heartbeats the entries
in flight every third of the visibility timeout (so a long task stays owned) and, every half,
reclaims entries idle past it (XAUTOCLAIM) from dead consumers - as many as it has free slots.

Every part fails and recovers on its own, and logs one line per state change
(``stabilize_redis.outage``): reads, promotion (per partition: a partition whose promotion
fails is retried on its own backoff and never holds the others up), heartbeats, reclaiming,
message handling and the cleanup. A handler that fails because Redis cannot serve (unreachable,
``maxmemory``, ...) keeps its entry - in flight, heartbeated, so nobody else takes it and its
delivery count does not grow - and tries it again with capped exponential backoff until Redis
answers or the consumer stops (then the entry stays pending and is reclaimed as usual).

On a Redis Cluster one XREADGROUP may not span slots (CROSSSLOT, even for streams on one node)
and every partition has a slot of its own, so the loop thread there only promotes, and one
reader thread per partition blocks on that partition's stream; the free handler slots are
shared, reserved under one lock (what a reader got beyond them is handed back), so the worker
still never holds more entries than it can run.

Consumer hygiene: on ``stop()`` the consumer deletes itself from every group where it holds no
pending entry; and every ``IDLE_FACTOR`` visibility timeouts one worker of the namespace (a
lease) deletes the consumers idle that long that hold nothing (``lua/delete_consumers.lua``:
checked and deleted atomically, so a pending entry is never dropped - the entries of a dead
consumer are reclaimed first). The groups thus hold the live consumers plus those gone less
than about two such periods ago.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import redis

from stabilize_redis.backend.batch import pipeline
from stabilize_redis.backend.redis_backend import Delivery, RedisBackend
from stabilize_redis.keys import CONSUMER_GROUP
from stabilize_redis.outage import Backoff, OutageLog, describe, redis_unavailable
from stabilize_redis.queue.dispatch import Dispatcher

log = logging.getLogger("stabilize_redis.worker")


def consumer_name() -> str:
    """A consumer name unique to this consumer: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class _Promotion:
    """When to promote which partitions: every ``EVERY_S`` seconds and at the earliest due
    time; a partition whose promotion failed is left out until its own backoff has passed."""

    EVERY_S = 0.25

    def __init__(self, backend: RedisBackend, outage: OutageLog) -> None:
        self.backend = backend
        self.outage = outage
        self.next_at = 0.0  # epoch seconds of the next regular pass
        self.next_due: float | None = None  # earliest due time of a delayed message, if known
        self._retry_at: dict[int, float] = {}
        self._backoff: dict[int, Backoff] = {}

    def due(self, now: float) -> bool:
        return now >= self.next_at or (self.next_due is not None and now >= self.next_due)

    def wake_at(self) -> float:
        return self.next_at if self.next_due is None else min(self.next_at, self.next_due)

    def run(self, now: float) -> None:
        parts = [i for i in range(self.backend.keys.partitions) if self._retry_at.get(i, 0.0) <= now]
        failures: dict[int, Exception] = {}
        try:
            self.next_due = self.backend.promote(partitions=parts, failures=failures)
        except Exception as e:  # noqa: BLE001 - nothing promoted (connection lost, ...): retry later
            failures = dict.fromkeys(parts, e)
            self.next_due = None
        for i in parts:
            if i in failures:
                self._retry_at[i] = now + self._backoff.setdefault(i, Backoff()).next()
            else:
                self._retry_at.pop(i, None)
                self._backoff.pop(i, None)
        self.next_at = now + self.EVERY_S
        if failures:
            first = failures[min(failures)]
            n = self.backend.keys.partitions
            self.outage.failed(first, "" if len(failures) == n else f"{len(failures)} of {n} partitions")
        elif not self._retry_at:
            self.outage.ok()


class Consumer:
    """Reads and dispatches messages until ``stop()``; safe to run in many processes at once."""

    REPORT_EVERY_S = 30.0
    IDLE_FACTOR = 3.0
    """Consumers idle this many visibility timeouts and holding nothing are deleted."""

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
        self._stop = threading.Event()  # everything stops
        self._draining = threading.Event()  # no more reading or reclaiming; in-flight work goes on
        self._inflight: dict[tuple[int, str], Delivery] = {}
        self._lock = threading.Lock()
        self._slot_freed = threading.Condition(self._lock)
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="stz-handler")
        self._reader: threading.Thread | None = None
        self._partition_readers: list[threading.Thread] = []
        self._failing_reads: set[int] = set()  # partitions whose reader's last read failed
        self._maintenance: threading.Thread | None = None
        self._delete_consumers = backend.scripts.delete_consumers
        self.outages = {what: OutageLog(log, what) for what in (
            "read", "promote delayed messages", "heartbeat", "reclaim", "consumer cleanup", "message handling")}
        self._promotion = _Promotion(backend, self.outages["promote delayed messages"])
        self.processed = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._draining.clear()
        loop = self._promote_loop if self.backend.cluster else self._read_loop
        self._reader = threading.Thread(target=loop, name="stz-reader", daemon=True)
        self._maintenance = threading.Thread(target=self._maintenance_loop, name="stz-heartbeat", daemon=True)
        self._partition_readers = [
            threading.Thread(target=self._read_partition_loop, args=(i,), name=f"stz-reader-p{i}", daemon=True)
            for i in range(self.backend.keys.partitions)] if self.backend.cluster else []
        self._reader.start()
        self._maintenance.start()
        for thread in self._partition_readers:
            thread.start()
        log.info("consumer %s started: concurrency=%d visibility=%.0fs on %s", self.name,
                 self.concurrency, self.visibility_timeout, self.backend.target.describe())

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop reading, let in-flight handlers finish (up to ``timeout``; they stay
        heartbeated meanwhile), then delete this consumer from every group where it holds no
        pending entry. Entries still unfinished stay pending and are reclaimed by another worker."""
        deadline = time.monotonic() + (timeout or 0)
        self._draining.set()
        if self._reader is not None:
            self._reader.join(timeout)
        for thread in self._partition_readers:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._partition_readers = []
        with self._slot_freed:
            while self._inflight and (left := deadline - time.monotonic()) > 0:
                self._slot_freed.wait(left)
        self._stop.set()
        if self._maintenance is not None:
            self._maintenance.join(timeout)
        self._reader = self._maintenance = None
        self._pool.shutdown(wait=False, cancel_futures=True)
        left_over = self.inflight_count()
        self._release()
        log.info("consumer %s stopped (%d processed, %d left in flight)", self.name, self.processed, left_over)

    @property
    def running(self) -> bool:
        return self._reader is not None and not self._draining.is_set()

    def inflight_count(self) -> int:
        with self._lock:
            return len(self._inflight)

    # -- reading -----------------------------------------------------------------------------

    def _read_loop(self) -> None:
        embedded = self.backend.target.embedded
        outage = self.outages["read"]
        backoff = Backoff()
        recreated = False
        while not self._draining.is_set():
            if self._promotion.due(time.time()):
                self._promotion.run(time.time())
            free = self._wait_for_free_slots(0.5)
            if free == 0:
                continue
            block = max(1, min(self.block_ms, int((self._promotion.wake_at() - time.time()) * 1000) + 1))
            # COUNT applies per stream, so a read may return more entries than free slots; the
            # surplus is handed back to its streams at once (``_keep_what_fits``), never held
            # behind this worker's busy threads.
            count = max(1, -(-free // self.backend.keys.partitions))
            try:
                deliveries = self.backend.fetch(self.name, count, None if embedded else block)
            except Exception as e:  # noqa: BLE001 - Redis down or similar: the worker stays up
                outage.failed(e)
                missing_group = isinstance(e, redis.ResponseError) and str(e).startswith("NOGROUP")
                if missing_group and not recreated and self._recreate_groups():
                    recreated = True  # read again at once, but once per failure streak
                    continue
                self._draining.wait(backoff.next())
                continue
            outage.ok()
            backoff.reset()
            recreated = False
            if not deliveries and embedded:
                self._draining.wait(0.002)
            for delivery in self._keep_what_fits(deliveries):
                self._submit(delivery)

    def _promote_loop(self) -> None:
        """The loop thread on a cluster (the partitions' readers read): promote delayed
        messages at each due time and every ``_Promotion.EVERY_S``."""
        while not self._draining.is_set():
            if self._promotion.due(time.time()):
                self._promotion.run(time.time())
            self._draining.wait(max(0.001, self._promotion.wake_at() - time.time()))

    def _read_partition_loop(self, index: int) -> None:
        """One partition's reader on a cluster: a blocking XREADGROUP of its stream, COUNT the
        free handler slots, while any is free."""
        outage = self.outages["read"]
        backoff = Backoff()
        recreated = False
        while not self._draining.is_set():
            free = self._wait_for_free_slots(0.5)
            if free == 0:
                continue
            try:
                deliveries = self.backend.fetch(self.name, free, self.block_ms, partitions=[index])
            except Exception as e:  # noqa: BLE001 - a node down, a failover: this reader stays up
                with self._lock:
                    self._failing_reads.add(index)
                    failing = len(self._failing_reads)
                outage.failed(e, f"{failing} of {self.backend.keys.partitions} partitions")
                missing_group = isinstance(e, redis.ResponseError) and str(e).startswith("NOGROUP")
                if missing_group and not recreated and self._recreate_groups():
                    recreated = True
                    continue
                self._draining.wait(backoff.next())
                continue
            with self._lock:
                self._failing_reads.discard(index)
                recovered = not self._failing_reads
            if recovered:  # "read" is up again once every partition's reader is
                outage.ok()
            backoff.reset()
            recreated = False
            for delivery in self._keep_what_fits(deliveries):
                self._submit(delivery)

    def _keep_what_fits(self, deliveries: list[Delivery]) -> list[Delivery]:
        """The deliveries this worker has free handler slots for now, reserved (in flight from
        here on); the rest are handed back to their streams (another worker, or this one once a
        slot frees, takes them) - a worker whose threads are all busy must not hold an entry
        that would free them, such as the CancelRegion of the tasks it runs. If handing back
        fails, the surplus is kept (it runs here once a slot frees, as before)."""
        with self._lock:
            free = self.concurrency - len(self._inflight)
            if not self.backend.cluster:
                free = max(1, free)  # the one reader read only with a slot free
            kept, surplus = deliveries[:max(0, free)], deliveries[max(0, free):]
            for delivery in kept:
                self._inflight[(delivery.partition, delivery.entry_id)] = delivery
        if not surplus:
            return kept
        try:
            self.backend.hand_back(surplus)
        except Exception as e:  # noqa: BLE001 - Redis trouble: keep them, as a read of old did
            log.warning("handing back %d entries failed (%s); they run here once a slot frees", len(surplus),
                        describe(e))
            with self._lock:
                for delivery in surplus:
                    self._inflight[(delivery.partition, delivery.entry_id)] = delivery
            return deliveries
        return kept

    def _recreate_groups(self) -> bool:
        """A group is gone (Redis restarted empty, or its stream was deleted): create it again
        so reading resumes; True when done. Whether the namespace lost data is the guards'
        question (``durability.marker``); the marker is not touched here."""
        try:
            self.backend.ensure_groups()
        except redis.RedisError as e:
            log.debug("re-creating the consumer groups failed: %s", describe(e))
            return False
        log.warning("read: the namespace's consumer groups were missing (Redis restarted empty?); re-created")
        return True

    def _wait_for_free_slots(self, timeout: float) -> int:
        """Free handler slots, waiting up to ``timeout`` for one when all are busy."""
        with self._slot_freed:
            if len(self._inflight) >= self.concurrency:
                self._slot_freed.wait(timeout)
            return max(0, self.concurrency - len(self._inflight))

    # -- handling ----------------------------------------------------------------------------

    def _submit(self, delivery: Delivery) -> None:
        with self._lock:
            self._inflight[(delivery.partition, delivery.entry_id)] = delivery
        self._pool.submit(self._run, delivery)

    def _run(self, delivery: Delivery) -> None:
        outage = self.outages["message handling"]
        backoff: Backoff | None = None
        try:
            while True:
                try:
                    self.dispatcher.dispatch(delivery)
                except Exception as e:  # noqa: BLE001 - the entry stays pending either way
                    if not redis_unavailable(e) or self._stop.is_set():
                        self._dispatch_failed(delivery, e)
                        return
                    outage.failed(e)
                    backoff = backoff or Backoff()
                    if self._stop.wait(backoff.next()):
                        return
                    continue
                outage.ok()
                self.processed += 1
                return
        finally:
            with self._slot_freed:
                self._inflight.pop((delivery.partition, delivery.entry_id), None)
                self._slot_freed.notify_all()

    @staticmethod
    def _dispatch_failed(delivery: Delivery, error: Exception) -> None:
        if isinstance(error, redis.RedisError):
            log.warning("dispatch of entry %s (partition %d) failed (%s); it stays pending and will be "
                        "redelivered", delivery.entry_id, delivery.partition, describe(error))
            log.debug("dispatch failure", exc_info=error)
        else:
            log.error("dispatch of entry %s (partition %d) failed; it stays pending and will be redelivered",
                      delivery.entry_id, delivery.partition, exc_info=error)

    # -- maintenance -------------------------------------------------------------------------

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
            self._heartbeat()
            if time.monotonic() >= next_reclaim and not self._draining.is_set():
                next_reclaim = time.monotonic() + reclaim_every
                self._reclaim()
                self._cleanup()

    def _heartbeat(self) -> None:
        with self._lock:
            inflight = list(self._inflight.values())
        try:
            self.backend.heartbeat(self.name, inflight)
        except Exception as e:  # noqa: BLE001
            self.outages["heartbeat"].failed(e)
        else:
            self.outages["heartbeat"].ok()

    def _reclaim(self) -> None:
        """Take over a dead worker's entries - only as many as this worker has free handler
        slots: an entry claimed here waits for a slot while its heartbeat keeps it from every
        other worker, so a busy worker claiming more would hold them back from idle ones."""
        with self._lock:
            free = self.concurrency - len(self._inflight)
        if free <= 0:
            return
        try:
            reclaimed = self.backend.reclaim(self.name, int(self.visibility_timeout * 1000), count=free)
        except Exception as e:  # noqa: BLE001
            self.outages["reclaim"].failed(e)
            return
        self.outages["reclaim"].ok()
        for delivery in reclaimed:
            with self._lock:
                if (delivery.partition, delivery.entry_id) in self._inflight:
                    continue
            log.warning("reclaimed entry %s (partition %d, delivered %d times) from a dead worker",
                        delivery.entry_id, delivery.partition, delivery.delivered)
            self._submit(delivery)

    def _cleanup(self) -> None:
        """Under the namespace's cleanup lease (taken at most once per idle bound), delete the
        consumers idle past ``IDLE_FACTOR`` visibility timeouts that hold no pending entry."""
        idle_ms = max(1000, int(self.IDLE_FACTOR * self.visibility_timeout * 1000))
        try:
            if not self.backend.client.set(self.backend.keys.consumer_cleanup_lease, self.name, nx=True, px=idle_ms):
                return
            deleted = self._delete(idle_ms, "")
        except Exception as e:  # noqa: BLE001
            self.outages["consumer cleanup"].failed(e)
            return
        self.outages["consumer cleanup"].ok()
        if deleted:
            log.info("deleted %d consumer entries idle over %.0fs with nothing pending (workers gone)",
                     deleted, idle_ms / 1000)

    def _release(self) -> None:
        """Delete this consumer from every group where it holds no pending entry."""
        try:
            deleted = self._delete(0, self.name)
        except redis.RedisError as e:
            log.warning("consumer %s could not remove itself from the groups (%s); the cleanup of a "
                        "live worker will", self.name, describe(e))
            return
        log.debug("consumer %s removed from %d groups", self.name, deleted)

    def _delete(self, min_idle_ms: int, only: str) -> int:
        pipe = pipeline(self.backend.client)
        for part in self.backend.keys.all_partitions():
            self._delete_consumers(keys=[part.ready], args=[CONSUMER_GROUP, min_idle_ms, only], client=pipe)
        return sum(int(n) for n in pipe.execute())
