"""Running N worker processes: start them, restart any that dies, stop them all on a signal.

A worker that exits with EXIT_NAMESPACE_LOST (its namespace lost its Redis data) is not a crash:
it is started again every few seconds, so the workers resume once the namespace is restored."""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from multiprocessing.process import BaseProcess

from stabilize_redis.durability.marker import EXIT_NAMESPACE_LOST
from workers.process import WorkerSettings, configure_logging, run_worker

log = logging.getLogger("stabilize_redis.worker")

LOST_NAMESPACE_RETRY_S = 5.0


def _child(settings: WorkerSettings) -> None:
    raise SystemExit(run_worker(settings))


def supervise(settings: WorkerSettings, processes: int) -> int:
    """Run ``processes`` workers; with 1, run in this process. Returns the exit code."""
    if processes <= 1:
        return run_worker(settings)
    configure_logging(settings.log_level)
    ctx = multiprocessing.get_context("spawn")
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("supervisor received %s: stopping %d workers", signal.Signals(signum).name, processes)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def spawn() -> BaseProcess:
        proc = ctx.Process(target=_child, args=(settings,), daemon=False)
        proc.start()
        log.info("started worker pid %s", proc.pid)
        return proc

    children = [spawn() for _ in range(processes)]
    restarts: list[float] = []
    not_before: dict[int, float] = {}  # slot -> monotonic time a lost-namespace respawn may happen
    while not stop.wait(0.5):
        for i, proc in enumerate(children):
            if proc.is_alive():
                continue
            if proc.exitcode == EXIT_NAMESPACE_LOST:
                # Not a crash: the namespace lost its Redis data. Try again every few seconds
                # until an operator has run `stabilize-redis restore` (see workers/guards.py).
                due = not_before.setdefault(i, time.monotonic() + LOST_NAMESPACE_RETRY_S)
                if time.monotonic() < due:
                    continue
                not_before.pop(i, None)
                children[i] = spawn()
                continue
            log.warning("worker pid %s exited with %s; starting a replacement", proc.pid, proc.exitcode)
            restarts = [t for t in restarts if time.monotonic() - t < 60] + [time.monotonic()]
            if len(restarts) > 10 * processes:
                log.error("workers keep dying (%d restarts in a minute); giving up", len(restarts))
                stop.set()
                break
            children[i] = spawn()
    for proc in children:
        if proc.is_alive() and proc.pid is not None:
            proc.terminate()
    for proc in children:
        proc.join(settings.grace_period + 5)
        if proc.is_alive():
            proc.kill()
    return 0
