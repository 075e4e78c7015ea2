"""Benchmark: Redis memory per finished workflow, the dedup record, events - and per day.

Run by hand from the repository root under our venv::

    python -m tests.bench.bench_memory                       # 200 + 5,000 workflows
    python -m tests.bench.bench_memory --workflows 200 --many 100000

On the real Redis (``--redis``, else STABILIZE_TEST_REDIS_URL, else redis://127.0.0.1:6379/0)
in a namespace of its own (``bmem<random>``), deleted at the end; PostgreSQL (``--dsn``, else
STABILIZE_POSTGRES_DSN, else postgresql://postgres@127.0.0.1:5432/test; ``--dsn ''`` skips it)
in a schema of its own, dropped at the end. Workflows are 10-stage chains of one no-op task
each emitting an output key of its own, run by one in-process ``QueueProcessor``.

Measured with ``MEMORY USAGE key SAMPLES 0`` (exact for streams and sorted sets) summed over
every key of the namespace, divided by the workflows:

* **no PostgreSQL, kept** (``finished_ttl_s`` 0): hash, event stream, the workflow's dedup
  record, and everything of the namespace per workflow;
* **no PostgreSQL, after the eviction policy** (``finished_ttl_s`` a few seconds): the same once
  the finished workflows expired and promotion forgot them;
* **PostgreSQL**: after the checkpointer archived them (event streams trimmed) and after its
  retention sweep evicted them;
* **many workflows** (``--many``): the dedup records' total size with every workflow's record
  kept (their hashes and streams are deleted batch by batch so the shared server does not hold
  GBs), the windowed record's, what is left once the workflows leave (``store.delete``, as
  eviction), and what the previous layout (every message id in one partition sorted set for
  24 h) would hold for the same messages (its ids re-added to a scratch sorted set).

"Per day at full throughput" multiplies by the workflows a day at ``--rate`` stages/s (default:
1964, the W1 10-stage-chain figure of the README's ``tests/bench/bench.py`` run, 2 workers).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``tests.bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import redis  # noqa: E402

import stabilize_redis as api  # noqa: E402
from stabilize_redis.backend.redis_backend import RedisBackend  # noqa: E402
from stabilize_redis.backend.registry import forget_backends  # noqa: E402
from stabilize_redis.config import MemoryPolicy  # noqa: E402

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
README_W1_STAGES_PER_S = 1964.0
DAY = 86400.0


def chain(stages: int) -> api.Workflow:
    """A chain of ``stages`` single-task stages (task ``t``)."""
    out = []
    for i in range(stages):
        task = api.TaskExecution.create(name=f"s{i} task", implementing_class="t", stage_start=True, stage_end=True)
        out.append(api.StageExecution(ref_id=f"s{i}", type="s", name=f"s{i}", tasks=[task],
                                      requisite_stage_ref_ids={f"s{i - 1}"} if i else set(), context={}))
    return api.Workflow.create(application="bench-memory", name="chain", stages=out)


@dataclass
class Engine:
    backend: RedisBackend
    client: api.Client
    processor: api.QueueProcessor


def engine(url: str, namespace: str, policy: MemoryPolicy) -> Engine:
    store = api.RedisWorkflowStore(url, namespace=namespace, dsn="")
    queue = api.RedisQueue(url, namespace=namespace)
    registry = api.TaskRegistry()
    registry.register("t", lambda stage: api.TaskResult.success(outputs={f"{stage.ref_id}_out": f"out of {stage.ref_id}"}))
    store.backend.memory = policy
    processor = api.QueueProcessor(queue, store=store, task_registry=registry, engine_config=api.EngineConfig())
    return Engine(store.backend, api.Client(url, namespace, dsn=""), processor)


def run(eng: Engine, count: int, stages: int, batch: int = 200,
        after_batch: Callable[[list[str]], None] | None = None) -> tuple[list[str], float]:
    """Submit and run ``count`` workflows (in batches, ``after_batch`` called with each batch's
    ids once it ran); their ids and the stages/s achieved."""
    ids: list[str] = []
    started = time.perf_counter()
    while len(ids) < count:
        chunk = [eng.client.submit(chain(stages)) for _ in range(min(batch, count - len(ids)))]
        eng.processor.process_all(timeout=600)
        if after_batch is not None:
            after_batch(chunk)
        ids += chunk
    elapsed = time.perf_counter() - started
    return ids, count * stages / elapsed


def usage(client: Any, keys: Iterable[str]) -> int:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    return sum(int(v or 0) for v in pipe.execute())


def namespace_bytes(client: Any, namespace: str) -> tuple[int, int]:
    """(bytes, keys) of every key of the namespace."""
    keys = [k.decode() for k in client.scan_iter(match=f"{namespace}:*", count=1000)]
    return usage(client, keys), len(keys)


def per_workflow(eng: Engine, ids: list[str]) -> dict[str, float]:
    """Mean bytes of each workflow's hash, event stream and dedup record, and events per
    workflow, over ``ids``."""
    b, c = eng.backend, eng.backend.client
    n = len(ids)
    hashes = usage(c, [b.part(w).workflow(w) for w in ids]) / n
    events = usage(c, [b.part(w).events(w) for w in ids]) / n
    record = usage(c, [b.part(w).processed(w) for w in ids]) / n
    pipe = c.pipeline(transaction=False)
    for w in ids:
        pipe.xlen(b.part(w).events(w))
        pipe.zcard(b.part(w).processed(w))
    res = pipe.execute()
    return {"hash": hashes, "events": events, "record": record, "n_events": sum(res[0::2]) / n,
            "n_ids": sum(res[1::2]) / n}


def windowed(eng: Engine) -> tuple[int, int]:
    """(entries, bytes) of every partition's windowed dedup record."""
    c = eng.backend.client
    parts = eng.backend.keys.all_partitions()
    return sum(int(c.zcard(p.done)) for p in parts), usage(c, [p.done for p in parts])


def old_layout_bytes_per_id(eng: Engine, ids: list[str], scratch: str) -> float:
    """Bytes per entry of the previous dedup layout (one sorted set of every message id of a
    partition, scored by time): this run's message ids re-added to a scratch sorted set."""
    c = eng.backend.client
    total = 0
    for w in ids:
        members = c.zrange(eng.backend.part(w).processed(w), 0, -1, withscores=True)
        if members:
            c.zadd(scratch, {m: s for m, s in members})
            total += len(members)
    size = int(c.memory_usage(scratch, samples=0) or 0)
    c.delete(scratch)
    return size / max(1, total)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def human(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def section_no_pg(url: str, ns: str, count: int, stages: int, rows: list[tuple[str, str, str]]) -> dict[str, float]:
    kept_ns = f"{ns}-kept"
    eng = engine(url, kept_ns, MemoryPolicy(finished_ttl_s=0.0))
    ids, rate = run(eng, count, stages)
    m = per_workflow(eng, ids)
    total, nkeys = namespace_bytes(eng.backend.client, kept_ns)
    win_entries, _ = windowed(eng)
    rows += [
        ("no PG, kept", "workflow hash", human(m["hash"])),
        ("no PG, kept", f"event stream ({m['n_events']:.0f} events)", human(m["events"])),
        ("no PG, kept", f"dedup record ({m['n_ids']:.0f} ids)", human(m["record"])),
        ("no PG, kept", "windowed dedup record entries (all partitions)", str(win_entries)),
        ("no PG, kept", f"namespace total / workflow ({nkeys} keys)", human(total / count)),
    ]
    m["total"] = total / count
    m["rate"] = rate
    m["old_per_id"] = old_layout_bytes_per_id(eng, ids, f"{kept_ns}:scratch:old-done")
    cleanup(eng.backend.client, kept_ns)

    ttl_ns = f"{ns}-ttl"
    ttl = 3.0
    eng = engine(url, ttl_ns, MemoryPolicy(finished_ttl_s=ttl))
    ids, _ = run(eng, count, stages)
    before, _ = namespace_bytes(eng.backend.client, ttl_ns)
    c = eng.backend.client
    wait_for(lambda: c.exists(*[eng.backend.part(w).workflow(w) for w in ids]) == 0, ttl + 30,
             "the finished workflows to expire")
    eng.backend.promote()
    after, nkeys = namespace_bytes(c, ttl_ns)
    rows += [
        (f"no PG, finished_ttl {ttl:.0f}s", "namespace total / workflow, just finished", human(before / count)),
        (f"no PG, finished_ttl {ttl:.0f}s", f"namespace total / workflow, expired ({nkeys} keys left)",
         human(after / count)),
    ]
    cleanup(c, ttl_ns)
    return m


def section_pg(url: str, ns: str, dsn: str, count: int, stages: int, rows: list[tuple[str, str, str]]) -> None:
    import psycopg

    from stabilize_redis.durability.checkpointer import Checkpointer, CheckpointSettings
    from stabilize_redis.durability.migrate import migrate
    from stabilize_redis.durability.snapshots import SnapshotStore

    schema = f"stz_bmem{secrets.token_hex(4)}"
    pg_ns = f"{ns}-pg"
    migrate(dsn, schema)
    store = SnapshotStore(dsn, schema, pg_ns)
    try:
        eng = engine(url, pg_ns, MemoryPolicy.from_env(durable=True))
        ckpt = Checkpointer(eng.backend, store, CheckpointSettings(retention=1.0))
        ids, _ = run(eng, count, stages)
        finished, _ = namespace_bytes(eng.backend.client, pg_ns)
        ckpt.drain_all(timeout=120)
        m = per_workflow(eng, ids)
        archived, _ = namespace_bytes(eng.backend.client, pg_ns)
        time.sleep(1.1)  # the retention period: finished workflows ended more than 1 s ago
        ckpt.run_once(all_partitions=True, sweep_now=True)
        evicted, nkeys = namespace_bytes(eng.backend.client, pg_ns)
        rows += [
            ("PG", "namespace total / workflow, finished", human(finished / count)),
            ("PG", f"event stream after archiving ({m['n_events']:.0f} entry left)", human(m["events"])),
            ("PG", "namespace total / workflow, archived", human(archived / count)),
            ("PG", f"namespace total / workflow, evicted (retention; {nkeys} keys left)", human(evicted / count)),
        ]
        cleanup(eng.backend.client, pg_ns)
    finally:
        store.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(psycopg.sql.Identifier(schema)))


def section_many(url: str, ns: str, many: int, stages: int, old_per_id: float,
                 rows: list[tuple[str, str, str]]) -> tuple[float, float]:
    many_ns = f"{ns}-many"
    eng = engine(url, many_ns, MemoryPolicy(finished_ttl_s=0.0))
    c = eng.backend.client

    def drop_state(batch: list[str]) -> None:
        """Keep only the dedup records (the shared server need not hold GBs of hashes)."""
        keys = [k for w in batch for k in (eng.backend.part(w).workflow(w), eng.backend.part(w).events(w))]
        c.delete(*keys)

    ids, rate = run(eng, many, stages, batch=500, after_batch=drop_state)
    records = [eng.backend.part(w).processed(w) for w in ids]
    size = usage(c, records)
    pipe = c.pipeline(transaction=False)
    for r in records:
        pipe.zcard(r)
    entries = sum(int(v) for v in pipe.execute())
    win_entries, win_bytes = windowed(eng)
    for w in ids:  # as evict.lua / retention / expiry remove them (the record with the rest)
        eng.client.store.delete(w)
    left = sum(1 for _ in c.scan_iter(match=f"{many_ns}:*:dn:*", count=1000))
    rows += [
        (f"{many:,} workflows", f"dedup records, all kept ({entries:,} ids)", human(size)),
        (f"{many:,} workflows", f"windowed dedup record ({win_entries} entries)", human(win_bytes)),
        (f"{many:,} workflows", "dedup records left after the workflows left", str(left)),
        (f"{many:,} workflows", "previous layout (one zset, 24 h), same ids", human(entries * old_per_id)),
        (f"{many:,} workflows", "run at (stages/s, 1 in-process processor)", f"{rate:.0f}"),
    ]
    cleanup(c, many_ns)
    return size / many, entries / many


def cleanup(client: Any, namespace: str) -> None:
    """Delete every key of a namespace this benchmark created (and only those)."""
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{namespace}:*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            client.delete(*batch)
            batch = []
    if batch:
        client.delete(*batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis", default=os.environ.get("STABILIZE_TEST_REDIS_URL") or DEFAULT_URL)
    parser.add_argument("--dsn", default=os.environ.get("STABILIZE_POSTGRES_DSN", DEFAULT_DSN))
    parser.add_argument("--workflows", type=int, default=200, help="workflows per memory measurement")
    parser.add_argument("--many", type=int, default=5000, help="workflows for the dedup record's size")
    parser.add_argument("--stages", type=int, default=10)
    parser.add_argument("--rate", type=float, default=README_W1_STAGES_PER_S,
                        help="full throughput in stages/s for the per-day figures")
    args = parser.parse_args()
    ns = f"bmem{secrets.token_hex(4)}"
    client = redis.Redis.from_url(args.redis)
    rows: list[tuple[str, str, str]] = []
    try:
        m = section_no_pg(args.redis, ns, args.workflows, args.stages, rows)
        if args.dsn:
            section_pg(args.redis, ns, args.dsn, args.workflows, args.stages, rows)
        record_per_wf, ids_per_wf = section_many(args.redis, ns, args.many, args.stages, m["old_per_id"], rows)
    finally:
        for suffix in ("-kept", "-ttl", "-pg", "-many"):
            cleanup(client, ns + suffix)
        forget_backends()

    per_day = args.rate / args.stages * DAY
    msgs_per_day = per_day * ids_per_wf
    ttl = MemoryPolicy().finished_ttl_s
    rows += [
        ("per day", f"workflows at {args.rate:.0f} stages/s", f"{per_day:,.0f}"),
        ("per day", "without PG, finished_ttl 0 (kept for ever): growth", human(per_day * m["total"])),
        ("per day", "previous dedup layout (24 h of ids, steady)", human(msgs_per_day * m["old_per_id"])),
        ("per day", "without PG, default policy: growth", "0 (bounded)"),
        ("per day", f"without PG, default policy: steady state (finished_ttl {ttl / 3600:.0f} h)",
         human(per_day * ttl / DAY * m["total"])),
        ("per day", "  of which dedup records", human(per_day * ttl / DAY * record_per_wf)),
    ]
    width = max(len(r[1]) for r in rows)
    print(f"\nRedis memory, {args.stages}-stage chains ({args.workflows} per measurement, --many {args.many})\n")
    print(f"| {'setting':<28} | {'measure':<{width}} | value |")
    print(f"|{'-' * 30}|{'-' * (width + 2)}|-------|")
    for setting, what, value in rows:
        print(f"| {setting:<28} | {what:<{width}} | {value} |")


if __name__ == "__main__":
    main()
