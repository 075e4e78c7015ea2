"""A daemon thread that calls ``tick()`` every ``interval`` seconds until stopped."""

from __future__ import annotations

import logging
import threading

from stabilize_redis.outage import OutageLog

log = logging.getLogger("stabilize_redis.worker")


class PeriodicThread:
    """Subclasses implement ``tick()``; returning True ends the loop. ``interval`` <= 0 means
    ``start()`` does nothing. The first tick comes one interval after ``start()``.

    A tick that raises is tried again the next interval; ``outage`` reports it, one line per
    state change (down, still down, recovered), with tracebacks at DEBUG only."""

    thread_name = "stz-periodic"

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.outage = OutageLog(log, self.thread_name.removeprefix("stz-").replace("-", " "))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        if self.interval <= 0 or (self._thread is not None and self._thread.is_alive()):
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                done = self.tick()
            except Exception as e:  # noqa: BLE001 - the loop outlives any failure of one tick
                self.outage.failed(e)
                continue
            self.outage.ok()
            if done:
                return
