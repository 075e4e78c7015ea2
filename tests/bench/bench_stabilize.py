"""The stabilize 0.33.1 side of the benchmark. Runs under stabilize's own venv.

Prints a JSON list of result rows (see ``workloads.summarize``) as the last line of stdout.
With several configs or workloads it re-executes itself once per (config, workload) so
every measurement starts in a fresh process with fresh storage: stabilize keeps
process-wide singletons (SQLite pragma config, the dedup bloom filter, connection pools).

Configs (each in one process, ``Orchestrator(queue, store=store)``, processor built as
``QueueProcessor(queue, config=..., store=store, task_registry=registry)``):

* ``sqlite``          file DB, ``STABILIZE_SQLITE_JOURNAL_MODE=WAL``, default processor config
* ``sqlite-nodedup``  as above, ``enable_deduplication=False``
* ``pg``              PostgreSQL, a private database made for the run, ``stabilize mg-up``
* ``pg-nodedup``      as above, ``enable_deduplication=False``

Modes, the two ways stabilize's README documents to run the processor:

* ``start``  ``processor.start()``, "in a service": a poll thread feeding the default
  10 handler threads, polling every 50 ms (the default) when idle or when all 10 are busy.
* ``drain``  ``processor.process_all()``, "for scripts and tests": one thread drains the
  queue synchronously, no sleeps while messages are ready; called after all submits.

Worker CPU per stage is this process's user+sys CPU (``time.process_time``: every thread) from
the first submit to all workflows finished: stabilize's processor, store and orchestrator run
here, and so do this harness's submits and its completion probe (one indexed count query per
10 ms in ``start`` mode). With SQLite the database runs in this process too; a PostgreSQL
server's CPU is not counted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workloads import (  # noqa: E402
    ACTIVE_STATUS_NAMES,
    LOOP_TARGET,
    LOOP_TASK_NAME,
    SHAPES,
    TASK_NAME,
    add_cpu,
    build,
    loop_should_jump,
    summarize,
    warmup_workflow,
    workflow_count,
)

CONFIGS = ("sqlite", "sqlite-nodedup", "pg", "pg-nodedup")
MODES = ("start", "drain")
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
POLL_S = 0.01


@contextlib.contextmanager
def sqlite_backend() -> Iterator[tuple[Any, Any, Callable[[str], int], dict[str, Any]]]:
    """Store, queue and an active-workflow probe on a fresh WAL SQLite file."""
    from stabilize import SqliteQueue, SqliteWorkflowStore

    tmp = tempfile.mkdtemp(prefix="stz-bench-")
    path = os.path.join(tmp, "stabilize.db")
    url = f"sqlite:///{path}"
    store = SqliteWorkflowStore(url, create_tables=True)
    queue = SqliteQueue(url)
    queue._create_table()  # as stabilize's README does
    probe_conn = sqlite3.connect(path, check_same_thread=False)
    mode = probe_conn.execute("PRAGMA journal_mode").fetchone()[0]
    info = {"storage": f"sqlite file, journal_mode={mode}"}
    try:
        yield store, queue, lambda app: _count_active(probe_conn, app, "?"), info
    finally:
        probe_conn.close()
        queue.close()
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def pg_backend(admin_url: str) -> Iterator[tuple[Any, Any, Callable[[str], int], dict[str, Any]]]:
    """Store, queue and probe on a database created for this run and dropped after it."""
    import psycopg
    from stabilize import PostgresQueue, PostgresWorkflowStore

    db = f"stz_bench_{uuid.uuid4().hex[:12]}"
    parts = urlsplit(admin_url)
    url = urlunsplit(parts._replace(path=f"/{db}"))
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{db}"')
    store = queue = probe_conn = None
    try:
        cli = Path(sys.executable).with_name("stabilize")
        subprocess.run([str(cli), "mg-up", "--db-url", url], check=True, stdout=sys.stderr, stderr=sys.stderr)
        store = PostgresWorkflowStore(url)
        queue = PostgresQueue(url)
        probe_conn = psycopg.connect(url, autocommit=True)
        info = {"storage": f"postgresql database {db} (dropped after the run)"}
        yield store, queue, lambda app: _count_active(probe_conn, app, "%s"), info
    finally:
        for closable in (probe_conn, queue, store):
            if closable is not None:
                closable.close()
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def _count_active(conn: Any, application: str, ph: str) -> int:
    """Workflows of ``application`` not yet in a terminal status (one indexed query)."""
    marks = ", ".join([ph] * len(ACTIVE_STATUS_NAMES))
    sql = f"SELECT count(*) FROM pipeline_executions WHERE application = {ph} AND status IN ({marks})"
    row = conn.execute(sql, (application, *ACTIVE_STATUS_NAMES)).fetchone()
    return int(row[0])


def _wait_idle(probe: Callable[[str], int], application: str, deadline: float, drain: Any = None) -> bool:
    """Wait until no workflow of ``application`` is active; ``drain`` runs the processor inline."""
    while probe(application) > 0:
        if time.monotonic() > deadline:
            return False
        if drain is None:
            time.sleep(POLL_S)
            continue
        try:
            drain.process_all(timeout=max(0.1, deadline - time.monotonic()))
        except Exception as e:  # the message was rescheduled; keep draining, as the README advises
            logging.getLogger(__name__).error("process_all raised %r", e)
    return True


def run_one(
    config: str, mode: str, workload: str, scale: float, pg_url: str, timeout: float
) -> dict[str, Any]:
    """Measure one workload on one stabilize config and mode, in this process."""
    import stabilize
    from stabilize import Orchestrator, QueueProcessor, Task, TaskRegistry, TaskResult
    from stabilize.queue.processor.config import QueueProcessorConfig

    class NoopBench(Task):
        def execute(self, stage: Any) -> Any:
            return TaskResult.success(outputs={"ok": True})

    class LoopBackBench(Task):  # as tests/bench/bench_tasks.py
        def execute(self, stage: Any) -> Any:
            if loop_should_jump(stage.context):
                return TaskResult.jump_to(LOOP_TARGET)
            return TaskResult.success(outputs={"ok": True})

    registry = TaskRegistry()
    registry.register(TASK_NAME, NoopBench)
    registry.register(LOOP_TASK_NAME, LoopBackBench)
    backend = sqlite_backend() if config.startswith("sqlite") else pg_backend(pg_url)
    with backend as (store, queue, probe, info):
        proc_config = None  # None = QueueProcessorConfig.from_handler_config(): stabilize's default
        if config.endswith("-nodedup"):
            proc_config = replace(QueueProcessorConfig.from_handler_config(), enable_deduplication=False)
        processor = QueueProcessor(queue, config=proc_config, store=store, task_registry=registry)
        orchestrator = Orchestrator(queue, store=store)
        drain = processor if mode == "drain" else None
        if drain is None:
            processor.start()
        try:
            warm = warmup_workflow(stabilize, "warmup")
            store.store(warm)
            orchestrator.start(warm)
            _wait_idle(probe, "warmup", time.monotonic() + 60, drain)

            app = f"bench-{workload}"
            n = workflow_count(workload, scale)
            wfs = [build(stabilize, workload, app, i) for i in range(n)]
            t0, t0_epoch, cpu0 = time.monotonic(), time.time(), time.process_time()
            for wf in wfs:
                store.store(wf)  # as stabilize's README: store, then start
                orchestrator.start(wf)
            submit_s = time.monotonic() - t0
            done = _wait_idle(probe, app, t0 + timeout, drain)
            wall, cpu_s = time.monotonic() - t0, time.process_time() - cpu0
        finally:
            if drain is None:
                processor.stop()
        final = [store.retrieve(wf.id) for wf in wfs]
        cfg = processor.config
        how = "QueueProcessor.start()" if drain is None else "QueueProcessor.process_all()"
        extra = {
            **info,
            "timed_out": not done,
            "submit_s": submit_s,
            "processor": f"{how}, max_workers={cfg.max_workers}, poll_frequency_ms={cfg.poll_frequency_ms}, "
            f"enable_deduplication={cfg.enable_deduplication}",
            "stabilize_version": getattr(stabilize, "__version__", "?"),
        }
        threads = f"1p x {cfg.max_workers}t" if drain is None else "1p x 1t"
        row = summarize(workload, f"stz-{config}/{mode}", threads, wall, final, n, extra, t0_epoch)
        add_cpu(row, cpu_s, None)
        row["worker_cpu_source"] = (
            "time.process_time() of the one stabilize process, submit and probe included"
        )
        return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--workloads", default="W1,W2,W3,L1,LOOP")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--pg-url", default=DEFAULT_PG, help="admin DSN; a private database is created per run")
    ap.add_argument("--timeout", type=float, default=600.0, help="per workload, seconds")
    args = ap.parse_args(argv)
    configs, modes, workloads = (
        [x for x in v.split(",") if x] for v in (args.configs, args.modes, args.workloads)
    )
    for items, known in ((configs, CONFIGS), (modes, MODES), (workloads, tuple(SHAPES))):
        for item in items:
            if item not in known:
                ap.error(f"unknown {item!r}; choose from {','.join(known)}")
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)

    combos = [(w, c, m) for w in workloads for c in configs for m in modes]
    if len(combos) == 1:
        w, c, m = combos[0]
        if c.startswith("sqlite"):
            os.environ["STABILIZE_SQLITE_JOURNAL_MODE"] = "WAL"  # read once, at first connection
        try:
            rows = [run_one(c, m, w, args.scale, args.pg_url, args.timeout)]
        except Exception as e:  # report, do not crash the whole benchmark
            rows = [{"workload": w, "engine": f"stz-{c}/{m}", "error": repr(e)}]
        print(json.dumps(rows))
        return 0

    rows = []
    for w, c, m in combos:
        cmd = [sys.executable, __file__, "--configs", c, "--modes", m, "--workloads", w]
        cmd += ["--scale", str(args.scale), "--pg-url", args.pg_url, "--timeout", str(args.timeout)]
        out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()
        rows += (
            json.loads(out[-1]) if out else [{"workload": w, "engine": f"stz-{c}/{m}", "error": "no output"}]
        )
        last = rows[-1]
        print(
            f"stabilize {w} {c}/{m}: {last.get('stages_per_s', last.get('error') or last.get('unsupported'))}",
            file=sys.stderr,
            flush=True,
        )
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
