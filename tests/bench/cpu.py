"""CPU time of a process group and of a redis-server, for per-stage CPU columns (Linux).

A worker group is every process in one session (``worker_group`` starts the supervisor with
``start_new_session=True``, so the session id is its pid and the benchmark itself is not in
it). Each process is read through its CPU-time clock (``clock_getcpuclockid``): user+sys of
all its threads, exited threads included, in nanoseconds, where ``/proc/<pid>/stat`` would
give 10 ms ticks. A process that exits between two samples loses its time; the delta says so
(``exact=False``) rather than report a low number as exact.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time
from dataclasses import dataclass
from typing import Any

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.clock_getcpuclockid.argtypes = (ctypes.c_int, ctypes.POINTER(ctypes.c_int))
_libc.clock_getcpuclockid.restype = ctypes.c_int


def process_cpu_ns(pid: int) -> int | None:
    """User+sys CPU nanoseconds of process ``pid`` (all its threads), or None once it is gone."""
    clock = ctypes.c_int()
    if _libc.clock_getcpuclockid(pid, ctypes.byref(clock)) != 0:
        return None
    try:
        return time.clock_gettime_ns(clock.value)
    except OSError:
        return None


def session_pids(sid: int) -> list[int]:
    """Pids of the live processes whose session id is ``sid`` (from /proc/<pid>/stat)."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp session
        if int(fields[3]) == sid:
            pids.append(int(name))
    return pids


@dataclass(frozen=True)
class GroupSample:
    """CPU nanoseconds per live pid of a session at one moment."""

    by_pid: dict[int, int]


@dataclass(frozen=True)
class GroupDelta:
    """CPU spent by a session between two samples."""

    seconds: float
    processes: int
    exact: bool  # False when a process sampled at the start was gone at the end


class SessionCPU:
    """Samples the CPU time of every process in session ``sid``."""

    def __init__(self, sid: int) -> None:
        self.sid = sid

    def sample(self) -> GroupSample:
        by_pid = {}
        for pid in session_pids(self.sid):
            ns = process_cpu_ns(pid)
            if ns is not None:
                by_pid[pid] = ns
        return GroupSample(by_pid)

    def delta(self, start: GroupSample, end: GroupSample) -> GroupDelta:
        """CPU between ``start`` and ``end``; a process born in between counts from its birth."""
        spent = sum(ns - start.by_pid.get(pid, 0) for pid, ns in end.by_pid.items())
        return GroupDelta(spent / 1e9, len(end.by_pid), exact=set(start.by_pid) <= set(end.by_pid))

    def wait_idle(self, timeout: float = 30.0, window: float = 0.1, busy_ms: float = 2.0) -> bool:
        """Wait until the group spends under ``busy_ms`` of CPU in each of two consecutive
        ``window``-second windows (start-up imports and warm-up done), at most ``timeout``
        seconds. Returns whether it got there. CPU use can only be seen by sampling it."""
        deadline = time.monotonic() + timeout
        quiet, last = 0, self.sample()
        while time.monotonic() < deadline:
            time.sleep(window)
            now = self.sample()
            quiet = quiet + 1 if self.delta(last, now).seconds * 1000.0 < busy_ms else 0
            if quiet >= 2:
                return True
            last = now
        return False


def redis_cpu_seconds(client: Any) -> float:
    """redis-server's own user+sys CPU seconds (``INFO cpu``: all its threads, µs precision)."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
