"""Running N worker processes: start them, replace any that dies, stop them all on a signal.

Exit codes of ``supervise`` (and so of ``stabilize-redis worker``):

* ``EXIT_OK`` (0): stopped by SIGTERM/SIGINT - the only way to exit 0;
* 1: with ``--processes 1`` (the worker runs in this process), the worker crashed;
* ``EXIT_USAGE`` (2): bad arguments, e.g. ``--app`` names no TaskRegistry (a worker that says
  so stops the supervisor at once: restarting cannot fix it);
* ``EXIT_NAMESPACE_LOST`` (3): with ``--processes 1``, the namespace lost its Redis data (run
  ``stabilize-redis restore``). Supervised workers that exit with it are not crashes: each is
  started again every ``RestartPolicy.lost_namespace_retry_s`` seconds, so they resume once the
  namespace is restored;
* ``EXIT_GAVE_UP`` (4): a worker slot crashed ``RestartPolicy.max_crashes`` times in a row,
  each time within ``healthy_after_s`` of its start: the supervisor stops the others and gives up.

A crashed worker is replaced after a per-slot backoff (0.2 s doubling to 10 s; reset once a
worker ran ``healthy_after_s``). A worker waiting for Redis (unreachable, or at ``maxmemory``)
is alive and never counted: it starts serving by itself when Redis answers.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import signal
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess

from stabilize_redis.durability.marker import EXIT_NAMESPACE_LOST
from stabilize_redis.outage import Backoff
from workers.app import AppLoadError
from workers.process import WorkerSettings, configure_logging, run_worker

log = logging.getLogger("stabilize_redis.worker")

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_GAVE_UP = 4
LOST_NAMESPACE_RETRY_S = 5.0


@dataclass(frozen=True)
class RestartPolicy:
    """How dead workers are replaced (see the module docstring)."""

    max_crashes: int = 10
    healthy_after_s: float = 60.0
    backoff_initial_s: float = 0.2
    backoff_cap_s: float = 10.0
    lost_namespace_retry_s: float = LOST_NAMESPACE_RETRY_S


@dataclass
class _Slot:
    proc: BaseProcess | None
    started: float
    backoff: Backoff
    crashes: int = 0  # consecutive crashes, each within healthy_after_s of its start
    respawn_at: float = 0.0  # while proc is None


@dataclass
class _Supervision:
    settings: WorkerSettings
    policy: RestartPolicy
    stop: threading.Event
    slots: list[_Slot] = field(default_factory=list)
    exit_code: int = EXIT_OK

    def spawn(self) -> BaseProcess:
        proc = multiprocessing.get_context("spawn").Process(target=_child, args=(self.settings,), daemon=False)
        proc.start()
        log.info("started worker pid %s", proc.pid)
        return proc

    def check(self, slot: _Slot, now: float) -> None:
        """Replace the slot's worker when it died or its respawn is due."""
        if slot.proc is None:
            if now >= slot.respawn_at:
                slot.proc, slot.started = self.spawn(), now
            return
        if slot.proc.is_alive():
            return
        code, pid, ran = slot.proc.exitcode, slot.proc.pid, now - slot.started
        slot.proc = None
        if code == EXIT_NAMESPACE_LOST:
            # Not a crash: try again every few seconds until an operator has run
            # `stabilize-redis restore` (see workers/guards.py).
            slot.respawn_at = now + self.policy.lost_namespace_retry_s
            return
        if code == EXIT_USAGE:
            log.error("worker pid %s refused its arguments (exit %d); stopping", pid, code)
            self.give_up(EXIT_USAGE)
            return
        if ran >= self.policy.healthy_after_s:
            slot.crashes = 0
            slot.backoff.reset()
        slot.crashes += 1
        if slot.crashes >= self.policy.max_crashes:
            log.error("worker pid %s exited with %s after %.1fs: %d crashes in a row; giving up (exit %d)",
                      pid, code, ran, slot.crashes, EXIT_GAVE_UP)
            self.give_up(EXIT_GAVE_UP)
            return
        delay = slot.backoff.next()
        slot.respawn_at = now + delay
        log.warning("worker pid %s exited with %s after %.1fs; starting a replacement in %.1fs", pid, code, ran,
                    delay)

    def give_up(self, code: int) -> None:
        self.exit_code = code
        self.stop.set()

    def wait(self) -> None:
        """Until a worker dies, a respawn is due, or half a second passes."""
        now = time.monotonic()
        timeout = min([0.5] + [max(0.0, s.respawn_at - now) for s in self.slots if s.proc is None])
        sentinels = [s.proc.sentinel for s in self.slots if s.proc is not None]
        if sentinels:
            multiprocessing.connection.wait(sentinels, timeout)
        else:
            self.stop.wait(timeout)

    def shutdown(self) -> None:
        procs = [s.proc for s in self.slots if s.proc is not None]
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                proc.terminate()
        for proc in procs:
            proc.join(self.settings.grace_period + 5)
            if proc.is_alive():
                proc.kill()


def _child(settings: WorkerSettings) -> None:
    try:
        code = run_worker(settings)
    except AppLoadError as e:
        log.error("stabilize-redis worker: %s", e)
        code = EXIT_USAGE
    raise SystemExit(code)


def supervise(settings: WorkerSettings, processes: int, policy: RestartPolicy | None = None) -> int:
    """Run ``processes`` workers; with 1, run in this process. Returns the exit code (module
    docstring)."""
    if processes <= 1:
        return run_worker(settings)
    configure_logging(settings.log_level)
    run = _Supervision(settings, policy or RestartPolicy(), threading.Event())

    def on_signal(signum: int, _frame: object) -> None:
        log.info("supervisor received %s: stopping %d workers", signal.Signals(signum).name, processes)
        run.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    backoff = (run.policy.backoff_initial_s, run.policy.backoff_cap_s)
    run.slots = [_Slot(run.spawn(), time.monotonic(), Backoff(*backoff)) for _ in range(processes)]
    while not run.stop.is_set():
        run.wait()
        now = time.monotonic()
        for slot in run.slots:
            if run.stop.is_set():
                break
            run.check(slot, now)
    run.shutdown()
    return run.exit_code
