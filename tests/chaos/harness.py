"""The chaos suite's machinery: a private Redis with AOF it can kill and restart, worker
processes it can SIGKILL and replace, a PostgreSQL schema of its own behind a TCP proxy it can
cut, the workload of mixed shapes with what each must end as, and the checks afterwards.

Timing never stands in for synchronisation: every wait polls a condition with a deadline.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis
from psycopg import sql

from stabilize_redis import StageExecution, TaskExecution, Workflow, WorkflowStatus
from stabilize_redis.durability.migrate import migrate
from stabilize_redis.durability.snapshots import SnapshotStore, snapshot_fields
from stabilize_redis.keys import CONSUMER_GROUP, NamespaceKeys
from tests.conftest import free_port, start_private_redis

ROOT = Path(__file__).resolve().parents[2]
S = WorkflowStatus
PG_DSN = os.environ.get("STABILIZE_TEST_POSTGRES_DSN") or "postgresql://postgres@127.0.0.1:5432/test"


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``condition`` until truthy; AssertionError after ``timeout`` seconds. Exceptions
    (a Redis being restarted) count as "not yet"."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except (redis.RedisError, psycopg.Error):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# -- workload --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """How a workflow must end: its status, each stage's status, and how many executions each
    stage's task has when nothing goes wrong (0: never runs)."""

    shape: str
    status: WorkflowStatus
    stages: dict[str, WorkflowStatus]
    runs: dict[str, int]


def _stage(ref: str, task: str = "work", requires: tuple[str, ...] = (), work_s: float = 0.02,
           **context: Any) -> StageExecution:
    return StageExecution(
        ref_id=ref, type=task, name=ref, requisite_stage_ref_ids=set(requires),
        context={"work_s": work_s, **context},
        tasks=[TaskExecution.create(name=ref, implementing_class=task, stage_start=True, stage_end=True)])


def build_workload(count: int, seed: int = 7, work_scale: float = 1.0) -> list[tuple[Workflow, Expected]]:
    """``count`` workflows cycling through six shapes: chains, fan-out/fan-in, a failure that
    continues, a failing branch of a fan that continues, transient retries, and a failure
    that halts (the workflow ends TERMINAL, its downstream never starts). Tasks sleep
    0.01-0.25 s times ``work_scale``."""
    rnd = random.Random(seed)

    def w() -> float:
        return round(rnd.uniform(0.01, 0.25) * work_scale, 3)

    out: list[tuple[Workflow, Expected]] = []
    for i in range(count):
        kind = i % 6
        if kind == 0:
            n = rnd.randint(3, 5)
            stages = [_stage("s0", work_s=w())] + [_stage(f"s{k}", requires=(f"s{k - 1}",), work_s=w())
                                                   for k in range(1, n)]
            exp = Expected("chain", S.SUCCEEDED, {s.ref_id: S.SUCCEEDED for s in stages}, {s.ref_id: 1 for s in stages})
        elif kind == 1:
            width = rnd.randint(3, 5)
            mids = [_stage(f"m{k}", requires=("start",), work_s=w()) for k in range(width)]
            stages = [_stage("start", work_s=w()), *mids, _stage("end", requires=tuple(m.ref_id for m in mids))]
            exp = Expected("fan", S.SUCCEEDED, {s.ref_id: S.SUCCEEDED for s in stages}, {s.ref_id: 1 for s in stages})
        elif kind == 2:
            stages = [_stage("a", work_s=w()), _stage("f", "fail", ("a",), w(), continuePipelineOnFailure=True),
                      _stage("z", requires=("f",), work_s=w())]
            exp = Expected("continue", S.SUCCEEDED, {"a": S.SUCCEEDED, "f": S.FAILED_CONTINUE, "z": S.SUCCEEDED},
                           {"a": 1, "f": 1, "z": 1})
        elif kind == 3:
            stages = [_stage("start", work_s=w()), _stage("ok", requires=("start",), work_s=w()),
                      _stage("bad", "fail", ("start",), w(), continuePipelineOnFailure=True),
                      _stage("end", requires=("ok", "bad"), work_s=w())]
            exp = Expected("fan-continue", S.SUCCEEDED,
                           {"start": S.SUCCEEDED, "ok": S.SUCCEEDED, "bad": S.FAILED_CONTINUE, "end": S.SUCCEEDED},
                           {"start": 1, "ok": 1, "bad": 1, "end": 1})
        elif kind == 4:
            stages = [_stage("a", work_s=w()), _stage("r", "flaky", ("a",), w(), fail_times=2),
                      _stage("z", requires=("r",), work_s=w())]
            exp = Expected("retry", S.SUCCEEDED, {"a": S.SUCCEEDED, "r": S.SUCCEEDED, "z": S.SUCCEEDED},
                           {"a": 1, "r": 3, "z": 1})
        else:
            stages = [_stage("a", work_s=w()), _stage("x", "fail", ("a",), w()), _stage("z", requires=("x",))]
            exp = Expected("halt", S.TERMINAL, {"a": S.SUCCEEDED, "x": S.TERMINAL, "z": S.NOT_STARTED},
                           {"a": 1, "x": 1, "z": 0})
        wf = Workflow.create(application="chaos", name=exp.shape, stages=stages)
        out.append((wf, exp))
    return out


# -- Redis -----------------------------------------------------------------------------------


class PrivateRedis:
    """A redis-server of the suite's own, with AOF ``everysec`` in a directory of its own.
    Automatic AOF rewrites are off, so a copy of the AOF directory taken while it runs
    (``copy_aof``) is self-consistent; ``restart_from`` then plays a crash that lost every
    write after the copy."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.port = free_port()
        self.args = ["--appendonly", "yes", "--appendfsync", "everysec", "--auto-aof-rewrite-percentage", "0"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = start_private_redis(self.port, self.args, str(self.dir))

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def restart(self) -> None:
        """SIGKILL the server and start it again from its AOF; returns once it answers."""
        self.kill()
        self.start()
        self.restarts += 1

    def copy_aof(self, name: str = "copy") -> Path:
        """Copy the running server's AOF directory now. Redis writes a command to the AOF file
        before it replies, so the copy holds every write acknowledged so far (fsynced or not)."""
        target = self.dir.parent / f"{self.dir.name}-aof-{name}"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(self.dir / "appendonlydir", target)
        return target

    def restart_from(self, copy: Path) -> None:
        """SIGKILL the server and start it again from ``copy`` (see ``copy_aof``): every write
        acknowledged after the copy is lost, as by a crash that lost that much of its AOF."""
        self.kill()
        shutil.rmtree(self.dir / "appendonlydir")
        shutil.copytree(copy, self.dir / "appendonlydir")
        self.start()
        self.restarts += 1

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# -- Postgres --------------------------------------------------------------------------------


@dataclass
class PgSchema:
    """A migrated schema private to one chaos run; ``drop()`` removes it."""

    dsn: str
    name: str = field(default_factory=lambda: f"stz_chaos_{uuid.uuid4().hex[:10]}")

    def create(self) -> None:
        migrate(self.dsn, self.name)

    def drop(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.name)))


# -- workers ---------------------------------------------------------------------------------


def _worker_command() -> list[str]:
    script = Path(sys.executable).parent / "stabilize-redis"
    return [str(script)] if script.exists() else [sys.executable, "-m", "workers.cli"]


@dataclass
class WorkerPool:
    """``stabilize-redis worker`` processes of one namespace; SIGKILLs and replacements are
    recorded (pid -> kill time) for the repeat accounting."""

    url: str
    namespace: str
    env: dict[str, str]
    logdir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    killed: dict[int, float] = field(default_factory=dict)
    exits: dict[int, int] = field(default_factory=dict)
    started: int = 0

    def start(self, n: int = 1) -> None:
        for _ in range(n):
            log = (self.logdir / f"worker-{self.started}.log").open("ab")
            proc = subprocess.Popen(
                [*_worker_command(), "worker", "--app", "tests.chaos.app:registry", "--url", self.url,
                 "--namespace", self.namespace, "--concurrency", "4", "--visibility-timeout", "2",
                 "--grace-period", "10", "--log-level", "WARNING"],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
            log.close()
            self.procs.append(proc)
            self.started += 1

    def reap(self) -> None:
        """Forget processes that exited, recording their exit codes."""
        for proc in list(self.procs):
            code = proc.poll()
            if code is not None:
                self.exits[proc.pid] = code
                self.procs.remove(proc)

    def kill_random(self, rnd: random.Random) -> int | None:
        """SIGKILL one live worker and start a replacement; returns the pid killed."""
        self.reap()
        if not self.procs:
            return None
        proc = rnd.choice(self.procs)
        self.killed[proc.pid] = time.time()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.reap()
        self.start()
        return proc.pid

    def wait_exit(self, timeout: float) -> dict[int, int]:
        """Wait for every worker to exit on its own; returns pid -> exit code."""
        wait_for(lambda: all(p.poll() is not None for p in self.procs), timeout, "the workers to exit")
        codes = {p.pid: int(p.poll() or 0) for p in self.procs}
        self.reap()
        return codes

    def stop(self, timeout: float = 30.0) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.reap()

    def log_text(self) -> str:
        """Every worker's whole log."""
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logdir.glob("worker-*.log")))

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for path in sorted(self.logdir.glob("worker-*.log")):
            text = path.read_text(errors="replace").splitlines()
            if text:
                out.append(f"--- {path.name}\n" + "\n".join(text[-lines:]))
        return "\n".join(out)


def worker_env(logdir: Path, dsn: str, schema: str, **extra: str) -> dict[str, str]:
    """The environment of the suite's workers: Postgres through the proxy, fast engine timings,
    checkpoints held back past the AOF fsync window, frequent lost-namespace checks and
    stalled-workflow sweeps."""
    return {
        **os.environ, "PYTHONPATH": str(ROOT), "STZ_CHAOS_LOG": str(logdir),
        "STABILIZE_POSTGRES_DSN": dsn, "STABILIZE_POSTGRES_SCHEMA": schema,
        "STABILIZE_CHECKPOINT_INTERVAL": "0.5", "STABILIZE_CHECKPOINT_FSYNC_LAG": "1.5",
        "STABILIZE_RETENTION": "3600", "STABILIZE_RECOVERY_INTERVAL": "3", "STABILIZE_RECOVERY_AGE": "10",
        "STABILIZE_MARKER_CHECK_INTERVAL": "1", "STABILIZE_TASK_BACKOFF_MIN_MS": "50",
        "STABILIZE_TASK_BACKOFF_MAX_MS": "500", "STABILIZE_HANDLER_RETRY_DELAY_S": "0.2",
        "STABILIZE_STAGE_WAIT_RETRY_S": "0.2", **extra,
    }


# -- observing -------------------------------------------------------------------------------


def statuses(client: redis.Redis, keys: NamespaceKeys, ids: list[str],
             store: SnapshotStore | None = None) -> dict[str, str | None]:
    """Workflow id -> status name in Redis; for a hash that is missing, the status Postgres
    holds when ``store`` is given (a workflow finished before a namespace loss), else None."""
    pipe = client.pipeline(transaction=False)
    for wid in ids:
        pipe.hget(keys.for_workflow(wid).workflow(wid), "st")
    out = {wid: (v.decode() if v else None) for wid, v in zip(ids, pipe.execute(), strict=True)}
    missing = [wid for wid, st in out.items() if st is None]
    if missing and store is not None:
        for wid in missing:
            row = store.get(wid)
            out[wid] = row.status if row is not None else None
    return out


def queue_state(client: redis.Redis, keys: NamespaceKeys) -> dict[str, int]:
    """Totals: entries in the ready streams (incl. in flight), pending, delayed, dead, dirty."""
    pipe = client.pipeline(transaction=False)
    for part in keys.all_partitions():
        pipe.xlen(part.ready)
        pipe.xpending(part.ready, CONSUMER_GROUP)
        pipe.zcard(part.delayed)
        pipe.xlen(part.dead)
        pipe.zcard(part.dirty)
    res = pipe.execute()
    out = {"ready": 0, "pending": 0, "delayed": 0, "dead": 0, "dirty": 0}
    for k in range(keys.partitions):
        xlen, pending, delayed, dead, dirty = res[5 * k: 5 * k + 5]
        out["ready"] += int(xlen)
        out["pending"] += int(pending["pending"] if isinstance(pending, dict) else pending[0])
        out["delayed"] += int(delayed)
        out["dead"] += int(dead)
        out["dirty"] += int(dirty)
    return out


def oldest_unsaved_s(client: redis.Redis, keys: NamespaceKeys) -> float:
    """Age in seconds (Redis clock) of the oldest change not yet checkpointed; 0 when none."""
    pipe = client.pipeline(transaction=False)
    pipe.time()
    for part in keys.all_partitions():
        pipe.zrange(part.dirty, 0, 0, withscores=True)
    res = pipe.execute()
    now = int(res[0][0]) * 1000 + int(res[0][1]) // 1000
    oldest = [int(r[0][1]) for r in res[1:] if r]
    return (now - min(oldest)) / 1000 if oldest else 0.0


@dataclass
class Run:
    """One execution of a task, from the app's log: who ran it, when it started and ended."""

    pid: int
    start: float
    end: float | None = None


def read_runs(logdir: Path) -> dict[tuple[str, str], list[Run]]:
    """(workflow id, stage ref) -> its executions in start order."""
    runs: dict[tuple[str, str], list[Run]] = defaultdict(list)
    open_runs: dict[tuple[int, str, str], Run] = {}
    for path in logdir.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            e = json.loads(line)
            key = (int(e["pid"]), e["wf"], e["stage"])
            if e["ev"] == "start":
                run = Run(int(e["pid"]), float(e["t"]))
                runs[(e["wf"], e["stage"])].append(run)
                open_runs[key] = run
            elif key in open_runs:
                open_runs.pop(key).end = float(e["t"])
    for lst in runs.values():
        lst.sort(key=lambda r: r.start)
    return runs


@dataclass
class Disruptions:
    """What the suite did to the system, for deciding whether a repeat is excused: worker
    kills (pid -> time), Redis outages and namespace losses ([down, up] wall-clock windows)."""

    killed: dict[int, float]
    outages: list[tuple[float, float]] = field(default_factory=list)
    commit_slack: float = 2.0

    def interrupted(self, run: Run) -> bool:
        """True when ``run`` was in flight at a kill (its worker died after it began and before
        its commit could have landed) or overlapped a Redis outage / data loss."""
        tk = self.killed.get(run.pid)
        if tk is not None and tk >= run.start and (run.end is None or tk <= run.end + self.commit_slack):
            return True
        end = run.end if run.end is not None else float("inf")
        return any(run.start <= up + self.commit_slack and end >= down - self.commit_slack
                   for down, up in self.outages)


@dataclass
class Verdict:
    """The checks' results; ``problems`` empty means the run passed."""

    problems: list[str] = field(default_factory=list)
    repeats: int = 0
    excused: int = 0
    stages: int = 0

    def check(self, ok: bool, message: str) -> None:
        if not ok and len(self.problems) < 50:
            self.problems.append(message)


def verify(workload: list[tuple[Workflow, Expected]], client: redis.Redis, keys: NamespaceKeys,
           store: SnapshotStore, runs: dict[tuple[str, str], list[Run]], disruptions: Disruptions,
           forbidden_after: dict[tuple[str, str], float] | None = None, dead_letters: int = 0) -> Verdict:
    """Every check the issue lists, against the final Redis state, the Postgres record and the
    execution log. ``forbidden_after``: (workflow, stage ref) -> time after which that task must
    not run again (its completion was checkpointed before a restore). ``dead_letters``: how many
    dead-lettered entries the run put there on purpose (the caller checks what they are)."""
    v = Verdict()
    state = queue_state(client, keys)
    v.check(state["pending"] == 0, f"entries left pending: {state}")
    v.check(state["delayed"] == 0, f"entries left delayed: {state}")
    v.check(state["dead"] == dead_letters, f"entries dead-lettered (expected {dead_letters}): {state}")
    v.check(state["ready"] == 0, f"entries left in the ready streams: {state}")
    for wf, exp in workload:
        raw = client.hgetall(keys.for_workflow(wf.id).workflow(wf.id))
        row = store.get(wf.id)
        v.check(row is not None, f"{wf.id} ({exp.shape}): no snapshot in Postgres")
        if row is None:
            continue
        final = row.workflow()
        if raw:
            v.check(row.version == int(raw[b"ver"]), f"{wf.id}: Postgres version {row.version} != Redis {raw[b'ver']!r}")
            v.check(row.fields() == snapshot_fields(raw), f"{wf.id}: Postgres snapshot differs from the Redis state")
        else:
            # Only a workflow that had finished before its namespace was lost lives in Postgres alone.
            v.check(final.status.is_complete, f"{wf.id} ({exp.shape}): missing from Redis while {final.status.name}")
        v.check(final.status == exp.status, f"{wf.id} ({exp.shape}): ended {final.status.name}, expected {exp.status.name}")
        events = store.events(wf.id)
        for stage in final.stages:
            v.stages += 1
            want = exp.stages[stage.ref_id]
            v.check(stage.status == want, f"{wf.id} ({exp.shape}) {stage.ref_id}: {stage.status.name} != {want.name}")
            started = sum(1 for e in events if e["event_type"] == "stage.started" and e["entity_id"] == stage.id)
            ended = sum(1 for e in events if e["event_type"] in ("stage.completed", "stage.failed")
                        and e["entity_id"] == stage.id)
            ran = want != S.NOT_STARTED
            v.check((started, ended) == ((1, 1) if ran else (0, 0)),
                    f"{wf.id} ({exp.shape}) {stage.ref_id}: started {started}x, completed/failed {ended}x in the archive")
            executions = runs.get((wf.id, stage.ref_id), [])
            expected = exp.runs[stage.ref_id]
            v.check(len(executions) >= expected, f"{wf.id} ({exp.shape}) {stage.ref_id}: ran {len(executions)}x, "
                                                 f"expected at least {expected}")
            extra = len(executions) - expected
            if extra > 0:
                v.repeats += extra
                excused = sum(1 for r in executions[:-1] if disruptions.interrupted(r))
                v.excused += min(extra, excused)
                v.check(excused >= extra, f"{wf.id} ({exp.shape}) {stage.ref_id}: {extra} repeat(s) of a task not in "
                                          f"flight at any kill: {executions}")
            cutoff = (forbidden_after or {}).get((wf.id, stage.ref_id))
            if cutoff is not None:
                late = [r for r in executions if r.start > cutoff]
                v.check(not late, f"{wf.id} ({exp.shape}) {stage.ref_id}: checkpointed completed task ran again: {late}")
    return v


def completed_in_postgres(store: SnapshotStore, ids: list[str]) -> Iterator[tuple[str, str]]:
    """(workflow id, stage ref) of every task the Postgres record holds as finished."""
    for wid in ids:
        row = store.get(wid)
        if row is None:
            continue
        for stage in row.workflow().stages:
            if stage.tasks and all(t.status.is_complete for t in stage.tasks):
                yield wid, stage.ref_id


def summary(name: str, workload: list[tuple[Workflow, Expected]], verdict: Verdict, **facts: Any) -> str:
    shapes = Counter(exp.shape for _, exp in workload)
    parts = [f"workflows={len(workload)} ({', '.join(f'{k}={n}' for k, n in sorted(shapes.items()))})",
             f"stages={verdict.stages}", *[f"{k}={v}" for k, v in facts.items()],
             f"repeats={verdict.repeats} (excused: in flight at a kill/outage: {verdict.excused})"]
    return f"chaos summary [{name}]: " + " ".join(parts)
