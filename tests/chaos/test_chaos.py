"""The chaos suite: nothing is lost and every state transition is applied once while workers
are SIGKILLed, Redis is killed and restarted from its AOF, PostgreSQL is unreachable for 10 s;
in separate runs, the namespace's Redis data is deleted and restored from Postgres, and Redis
restarts from an AOF about a second old (it lost its last second) while the checkpointers run
without fsync lag (PostgreSQL ends equal to Redis, every loss reconciled and reported).

``pytest tests/chaos`` is the CI form (smaller workload, still kills workers and restarts
Redis); ``STABILIZE_CHAOS=full pytest tests/chaos -s`` the full one (>= 300 workflows, 4 worker
processes). Both print a summary line. Needs ``redis-server`` and a PostgreSQL
(STABILIZE_TEST_POSTGRES_DSN, default postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import redis

from stabilize_redis import connect
from stabilize_redis.backend.registry import forget_backends
from stabilize_redis.durability.marker import EXIT_NAMESPACE_LOST
from stabilize_redis.durability.snapshots import SnapshotStore
from stabilize_redis.keys import NamespaceKeys
from tests.chaos.harness import (
    PG_DSN,
    ROOT,
    Disruptions,
    PgSchema,
    PrivateRedis,
    WorkerPool,
    _worker_command,
    build_workload,
    completed_in_postgres,
    oldest_unsaved_s,
    queue_state,
    read_runs,
    statuses,
    summary,
    verify,
    wait_for,
    worker_env,
)
from tests.durability.support import TcpProxy

FULL = os.environ.get("STABILIZE_CHAOS", "").lower() == "full"
WORKERS = 4


@dataclass
class Rig:
    """One chaos run's private Redis, Postgres schema (behind a proxy) and worker pool."""

    redis: PrivateRedis
    schema: PgSchema
    proxy: TcpProxy
    pool: WorkerPool
    namespace: str
    logdir: Path
    store: SnapshotStore

    @property
    def keys(self) -> NamespaceKeys:
        return NamespaceKeys(self.namespace, 16)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    server = PrivateRedis(tmp_path / "redis")
    server.dir.mkdir()
    server.start()
    schema = PgSchema(PG_DSN)
    schema.create()
    proxy = TcpProxy("127.0.0.1", int(PG_DSN.rsplit(":", 1)[1].split("/")[0]))
    proxy.up()
    logdir = tmp_path / "runs"
    logdir.mkdir()
    namespace = f"chaos{uuid.uuid4().hex[:8]}"
    env = worker_env(logdir, proxy.dsn(PG_DSN), schema.name)
    pool = WorkerPool(server.url, namespace, env, tmp_path)
    store = SnapshotStore(PG_DSN, schema.name, namespace)
    forget_backends()
    rig = Rig(server, schema, proxy, pool, namespace, logdir, store)
    try:
        yield rig
    finally:
        pool.stop(timeout=15)
        proxy.down()
        store.close()
        forget_backends()
        server.stop()
        schema.drop()


def _fail(rig: Rig, message: str) -> None:
    raise AssertionError(f"{message}\n{rig.pool.log_tail()}")


def _quiesce(rig: Rig, client: redis.Redis, timeout: float) -> None:
    """Wait until nothing is queued, in flight, delayed or unsaved (the checkpointers caught up)."""
    def idle() -> bool:
        s = queue_state(client, rig.keys)
        return s["ready"] == s["pending"] == s["delayed"] == s["dirty"] == 0

    try:
        wait_for(idle, timeout, "queues to drain and checkpoints to catch up")
    except AssertionError as e:
        _fail(rig, f"{e}: {queue_state(client, rig.keys)}")


@pytest.mark.timeout(1800)
def test_workflows_survive_worker_kills_a_redis_restart_and_a_postgres_outage(rig: Rig) -> None:
    # Workflows are submitted over a window long enough that the Redis restart and the whole
    # Postgres outage happen while work is going on (checkpoints pile up, then catch up).
    count = 300 if FULL else 60
    submit_over = 30.0 if FULL else 20.0
    redis_restart_at = 7.0 if FULL else 4.0
    pg_down_at, pg_down_for = (12.0, 10.0) if FULL else (6.0, 10.0)
    deadline = 900.0 if FULL else 300.0
    rnd = random.Random(11)
    workload = build_workload(count)
    ids = [wf.id for wf, _ in workload]
    client = connect(rig.redis.url, rig.namespace, dsn="")
    raw = redis.Redis.from_url(rig.redis.url)
    disruptions = Disruptions(rig.pool.killed)
    rig.pool.start(WORKERS)

    started = time.time()
    submitted = kills = 0
    redis_restarted = pg_cut = pg_back = False
    unsaved_during_outage = 0.0
    next_kill = started + rnd.uniform(1, 2)
    next_check = 0.0
    while True:
        now = time.time()
        elapsed = now - started
        due = count if elapsed >= submit_over else int(count * elapsed / submit_over)
        while submitted < due:
            try:
                client.submit(workload[submitted][0])
            except redis.RedisError:
                break
            submitted += 1
        if not redis_restarted and elapsed >= redis_restart_at:
            down = time.time()
            rig.redis.restart()
            disruptions.outages.append((down, time.time()))
            assert raw.exists(rig.keys.meta), "Redis came back without the namespace: the AOF was not replayed"
            redis_restarted = True
        if not pg_cut and elapsed >= pg_down_at:
            rig.proxy.down()
            pg_cut = True
        if pg_cut and not pg_back:
            with contextlib.suppress(redis.RedisError):
                unsaved_during_outage = max(unsaved_during_outage, oldest_unsaved_s(raw, rig.keys))
            if elapsed >= pg_down_at + pg_down_for:
                rig.proxy.up()
                pg_back = True
        if now >= next_kill:
            if rig.pool.kill_random(rnd) is not None:
                kills += 1
            next_kill = time.time() + rnd.uniform(1, 2)
        if submitted == count and redis_restarted and pg_back and now >= next_check:
            next_check = now + 0.5
            try:
                current = statuses(raw, rig.keys, ids)
            except redis.RedisError:
                current = {}
            if current and all(s in ("SUCCEEDED", "TERMINAL", "FAILED_CONTINUE", "CANCELED", "STOPPED")
                               for s in current.values()):
                break
        if elapsed > deadline:
            current = statuses(raw, rig.keys, ids)
            stuck = {w: s for w, s in current.items() if s not in ("SUCCEEDED", "TERMINAL")}
            _fail(rig, f"workflows still unfinished after {deadline:.0f}s: {len(stuck)} e.g. "
                       f"{list(stuck.items())[:5]}; queues {queue_state(raw, rig.keys)}")
        time.sleep(0.02)  # the chaos driver's tick, not a synchronisation

    _quiesce(rig, raw, 120)
    rig.pool.stop()
    elapsed = time.time() - started
    verdict = verify(workload, raw, rig.keys, rig.store, read_runs(rig.logdir), disruptions)
    print("\n" + summary("kills+redis-restart+postgres-outage", workload, verdict, workers=WORKERS,
                         kills=kills, worker_starts=rig.pool.started, redis_restarts=rig.redis.restarts,
                         postgres_outage_s=pg_down_for,
                         oldest_unsaved_during_outage=f"{unsaved_during_outage:.1f}s", time=f"{elapsed:.1f}s"))
    assert kills > 0 and rig.redis.restarts == 1
    assert unsaved_during_outage > pg_down_for / 2, \
        f"the Postgres outage did not hold checkpoints back (oldest unsaved change {unsaved_during_outage:.1f}s)"
    assert not verdict.problems, "\n".join(verdict.problems)


def _describe_stuck(rig: Rig, client: redis.Redis, ids: list[str]) -> str:
    """Diagnostics of unfinished workflows: stage and task statuses and what recovery would push."""
    from stabilize_redis.durability.recovery_plan import decode_workflow, describe, recovery_messages

    lines = [f"queues: {queue_state(client, rig.keys)}"]
    current = statuses(client, rig.keys, ids, rig.store)
    stuck = [w for w, st in current.items() if st not in ("SUCCEEDED", "TERMINAL")]
    lines.append(f"{len(stuck)} unfinished of {len(ids)}")
    for wid in stuck[:5]:
        decoded = decode_workflow(client.hgetall(rig.keys.for_workflow(wid).workflow(wid)))
        if decoded is None:
            lines.append(f"{wid}: hash missing")
            continue
        wf, records = decoded
        stages = ", ".join(f"{s.ref_id}={s.status.name}[{','.join(t.status.name for t in s.tasks)}]"
                           for s in wf.stages)
        lines.append(f"{wid} {wf.name} {wf.status.name}: {stages}; plan {describe(recovery_messages(wf, records))}")
    return "\n".join(lines)


def _wait_finished(rig: Rig, client: redis.Redis, ids: list[str], timeout: float) -> None:
    try:
        wait_for(lambda: all(s in ("SUCCEEDED", "TERMINAL")
                             for s in statuses(client, rig.keys, ids, rig.store).values()),
                 timeout, "every workflow to finish")
    except AssertionError as e:
        _fail(rig, f"{e}\n{_describe_stuck(rig, client, ids)}")


def _delete_namespace(client: redis.Redis, namespace: str) -> int:
    """Delete every key of the namespace at once (one DEL of all the keys a SCAN found)."""
    found = list(client.scan_iter(match=f"{namespace}:*", count=1000))
    return int(client.delete(*found)) if found else 0


def _restore(rig: Rig) -> dict[str, object]:
    proc = subprocess.run(
        [*_worker_command(), "restore", "--url", rig.redis.url, "--namespace", rig.namespace,
         "--dsn", PG_DSN, "--schema", rig.schema.name], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(1800)
def test_workflows_survive_losing_the_namespace_data_and_a_restore(rig: Rig) -> None:
    count = 300 if FULL else 60
    workload = build_workload(count, seed=23, work_scale=6.0)
    ids = [wf.id for wf, _ in workload]
    raw = redis.Redis.from_url(rig.redis.url)
    client = connect(rig.redis.url, rig.namespace, dsn="")
    rig.pool.start(WORKERS)
    started = time.time()
    for wf, _ in workload:
        client.submit(wf)

    wait_for(lambda: len(rig.store.versions(ids)) == count, 120, "every workflow to be checkpointed once")
    wait_for(lambda: len(rig.store.list(statuses=["SUCCEEDED", "TERMINAL"], limit=count)) >= count // 6, 120,
             "a sixth of the workflows to be checkpointed finished")
    assert any(s not in ("SUCCEEDED", "TERMINAL") for s in statuses(raw, rig.keys, ids).values()), \
        "the loss must happen mid-run"
    lost_at = time.time()
    assert _delete_namespace(raw, rig.namespace) > 0
    codes = rig.pool.wait_exit(60)
    assert set(codes.values()) == {EXIT_NAMESPACE_LOST}, f"workers must stop on the loss: {codes}"
    rig.pool.start(1)
    assert set(rig.pool.wait_exit(60).values()) == {EXIT_NAMESPACE_LOST}, "a new worker must refuse to start"
    assert not raw.exists(rig.keys.meta)

    restore_began = time.time()
    checkpointed_done = {key: restore_began for key in completed_in_postgres(rig.store, ids)}
    first = _restore(rig)
    second = _restore(rig)
    restored_at = time.time()
    assert first["failed"] == [] and first["restored"] == first["examined"] and first["restored"] > 0
    assert (second["restored"], second["messages"]) == (0, 0), f"restore must be idempotent: {second}"

    rig.pool.start(WORKERS)
    _wait_finished(rig, raw, ids, 120)
    _quiesce(rig, raw, 120)
    rig.pool.stop()
    elapsed = time.time() - started
    # The loss rolls each workflow back to its last checkpoint (at most the checkpoint interval
    # plus the fsync lag plus one batch old): tasks that ran in that window may run again.
    disruptions = Disruptions({}, outages=[(lost_at - 10.0, restored_at)])
    verdict = verify(workload, raw, rig.keys, rig.store, read_runs(rig.logdir), disruptions,
                     forbidden_after=checkpointed_done)
    print("\n" + summary("namespace-loss+restore", workload, verdict, workers=WORKERS,
                         restored=first["restored"], restore_messages=first["messages"],
                         checkpointed_completed_tasks=len(checkpointed_done), time=f"{elapsed:.1f}s"))
    assert not verdict.problems, "\n".join(verdict.problems)


def _reconciliations(rig: Rig) -> list[tuple[str, str, int]]:
    """(workflow id, action, lost events) of every reconciliation the checkpointers reported."""
    with psycopg.connect(PG_DSN) as conn:
        rows = conn.execute(psycopg.sql.SQL("SELECT workflow_id, action, lost_events FROM {}.reconciliations "
                                            "WHERE namespace = %s").format(psycopg.sql.Identifier(rig.schema.name)),
                            (rig.namespace,)).fetchall()
    return [(str(w), str(a), int(n)) for w, a, n in rows]


@pytest.mark.timeout(1800)
def test_workflows_survive_redis_restarting_from_an_aof_a_second_old(rig: Rig) -> None:
    """Redis is SIGKILLed and restarted from a copy of its AOF taken a second earlier, as a crash
    that lost its last second would leave it, while half the workload runs; workers are
    SIGKILLed every 1-2 s after that. The checkpointers run without fsync lag, so PostgreSQL
    holds states and events Redis lost: they must be reconciled and reported, and in the end
    every snapshot equals Redis's state and every transition is archived once.

    Submits pause from the copy until Redis is back: a submit acknowledged in the lost second
    that no checkpoint had copied yet is lost by definition of ``appendfsync everysec`` (the
    ``checkpoint`` submit durability exists for that). A lost submit that PostgreSQL has is
    restored by the reconciliation (tests/durability/test_rollback.py)."""
    count = 300 if FULL else 48
    first_half_over, second_half_over = (10.0, 20.0) if FULL else (2.0, 5.0)
    copy_at = first_half_over + 1.0
    lost_for = 1.0
    deadline = 900.0 if FULL else 300.0
    rig.pool.env.update(STABILIZE_CHECKPOINT_FSYNC_LAG="0", STABILIZE_CHECKPOINT_INTERVAL="0.2")
    rnd = random.Random(31)
    workload = build_workload(count, seed=41, work_scale=2.0)
    ids = [wf.id for wf, _ in workload]
    client = connect(rig.redis.url, rig.namespace, dsn="")
    raw = redis.Redis.from_url(rig.redis.url)
    disruptions = Disruptions(rig.pool.killed)
    rig.pool.start(WORKERS)

    started = time.time()
    submitted = kills = 0
    copied_at = back_at = 0.0
    copy: Path | None = None
    next_kill = 0.0
    while submitted < count:
        now = time.time()
        elapsed = now - started
        if back_at:
            due = count // 2 + int((count - count // 2) * min(1.0, (now - back_at) / second_half_over))
        else:
            due = int(count // 2 * min(1.0, elapsed / first_half_over))
        while submitted < due and (copy is None or back_at):
            try:
                client.submit(workload[submitted][0])
            except redis.RedisError:
                break
            submitted += 1
        if copy is None and elapsed >= copy_at:
            copy, copied_at = rig.redis.copy_aof(), time.time()
        if copy is not None and not back_at and now >= copied_at + lost_for:
            rig.redis.restart_from(copy)
            back_at = time.time()
            disruptions.outages.append((copied_at, back_at))
            next_kill = back_at + rnd.uniform(1, 2)
        if back_at and now >= next_kill:
            if rig.pool.kill_random(rnd) is not None:
                kills += 1
            next_kill = time.time() + rnd.uniform(1, 2)
        if elapsed > deadline:
            _fail(rig, f"only {submitted} of {count} workflows submitted after {deadline:.0f}s")
        time.sleep(0.02)  # the chaos driver's tick, not a synchronisation

    _wait_finished(rig, raw, ids, deadline)
    _quiesce(rig, raw, 120)
    rig.pool.stop()
    elapsed = time.time() - started
    verdict = verify(workload, raw, rig.keys, rig.store, read_runs(rig.logdir), disruptions)
    reports = _reconciliations(rig)
    print("\n" + summary("aof-rollback", workload, verdict, workers=WORKERS, kills=kills,
                         lost_s=f"{lost_for:.1f}", reconciled=len(reports),
                         lost_events_set_aside=sum(n for _, _, n in reports), time=f"{elapsed:.1f}s"))
    assert rig.redis.restarts == 1 and kills > 0
    assert reports, "PostgreSQL held states Redis lost: the reconciliation must report them"
    for wid, action, _ in reports:
        archived = {e["event_id"] for e in rig.store.events(wid)}
        assert f"{rig.namespace}:reconciled:" in " ".join(archived), \
            f"{wid} ({action}): the reconciliation is recorded in its archived events"
    text = rig.pool.log_text()
    assert "reconciliation of partition" in text and "Redis began a new life" in text
    assert not verdict.problems, "\n".join(verdict.problems)
