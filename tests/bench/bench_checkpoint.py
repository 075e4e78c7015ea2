"""Benchmark: the cost of checkpointing to PostgreSQL, on versus off, in one run.

Run by hand from the repository root under our venv::

    python tests/bench/bench_checkpoint.py                     # W1, W2, W3; 3 rounds
    python tests/bench/bench_checkpoint.py --rounds 1 --scale 0.5 --workloads W1,W3

Each round starts a private redis-server and, per mode, ``stabilize-redis worker --app
tests.bench.bench_tasks:registry --processes 2`` on a fresh namespace: "off" without a DSN
(no checkpointer), "on" with ``--dsn``/``--schema`` (the workers' embedded checkpointers,
default 1 s interval). The order of the modes alternates between rounds. Wall time is first
submit to every workflow terminal; stages/s is stages / wall. While "on" runs, the age of the
oldest dirty (not yet checkpointed) workflow is sampled every 50 ms; after each workload the
time until nothing is dirty is measured ("drain"), and at the end every workflow must have its
final version in Postgres. Targets (issue 3): overhead <= 15 %, oldest dirty age <= 2 s.

Debugging: BENCH_LOG_LEVEL (workers' log level, default WARNING) and BENCH_KEEP_LOGS=1 (keep
the worker logs; DEBUG shows every checkpoint pass and lease change).

PostgreSQL: ``--dsn`` or STABILIZE_POSTGRES_DSN (default postgresql://postgres@127.0.0.1:5432/test);
the benchmark creates a schema ``stz_bench<random>`` and drops it at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``tests.bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import psycopg  # noqa: E402

import stabilize_redis as api  # noqa: E402
from stabilize_redis.backend.registry import backend_for  # noqa: E402
from stabilize_redis.durability.drain import dirty_ages  # noqa: E402
from stabilize_redis.durability.migrate import migrate  # noqa: E402
from stabilize_redis.durability.snapshots import SnapshotStore  # noqa: E402
from tests.bench.bench_redis import private_redis  # noqa: E402
from tests.bench.workloads import SHAPES, build, warmup_workflow, workflow_count  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@contextlib.contextmanager
def workers(url: str, namespace: str, processes: int, concurrency: int,
            pg: tuple[str, str] | None) -> Iterator[subprocess.Popen[bytes]]:
    """``stabilize-redis worker`` in its own session, with or without Postgres; SIGTERM after."""
    cmd = [sys.executable, "-m", "workers.cli", "worker", "--app", "tests.bench.bench_tasks:registry",
           "--url", url, "--namespace", namespace, "--processes", str(processes),
           "--concurrency", str(concurrency), "--log-level", os.environ.get("BENCH_LOG_LEVEL", "WARNING")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STABILIZE_POSTGRES")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    if pg is not None:
        cmd += ["--dsn", pg[0], "--schema", pg[1]]
    log = Path(tempfile.mkstemp(prefix="bench-ckpt-worker-", suffix=".log")[1])
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.returncode not in (0, -signal.SIGTERM):
            print(f"worker log ({log}):\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
        if os.environ.get("BENCH_KEEP_LOGS"):
            print(f"worker log kept: {log}", file=sys.stderr)
        else:
            log.unlink(missing_ok=True)


class AgeSampler:
    """Samples the oldest dirty age (ms, Redis clock) every ``period`` seconds on a thread."""

    def __init__(self, url: str, namespace: str, period: float = 0.05) -> None:
        self.backend = backend_for(url, namespace)
        self.period = period
        self.max_ms = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            ages = [age for _, _, age in dirty_ages(self.backend) if age is not None]
            self.max_ms = max([self.max_ms, *ages])
            self.samples += 1

    def dirty(self) -> int:
        return sum(count for _, count, _ in dirty_ages(self.backend))

    def __enter__(self) -> AgeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _wait_all(client: api.Client, ids: list[str], timeout: float) -> int:
    """Wait for every workflow; returns how many did not SUCCEED."""
    deadline = time.monotonic() + timeout
    failures = 0
    for wid in ids:
        try:
            wf = client.wait(wid, max(0.1, deadline - time.monotonic()))
            failures += wf.status.name != "SUCCEEDED"
        except TimeoutError:
            failures += 1
    return failures


def run_mode(url: str, pg: tuple[str, str] | None, names: list[str], scale: float, processes: int,
             concurrency: int, timeout: float) -> dict[str, dict[str, Any]]:
    """One worker group (checkpointing on iff ``pg``), every workload; a row per workload."""
    namespace = f"bench{secrets.token_hex(4)}"
    rows: dict[str, dict[str, Any]] = {}
    with workers(url, namespace, processes, concurrency, pg) as proc:
        client = api.connect(url, namespace, dsn="")
        warm = client.submit(warmup_workflow(api, "warmup"))
        client.wait(warm, 120)
        if proc.poll() is not None:
            raise RuntimeError(f"worker group exited with {proc.returncode}")
        for name in names:
            wfs = [build(api, name, f"bench-{name}", i) for i in range(workflow_count(name, scale))]
            with AgeSampler(url, namespace) as sampler:
                t0 = time.monotonic()
                ids = [client.submit(wf) for wf in wfs]
                failures = _wait_all(client, ids, timeout)
                wall = time.monotonic() - t0
                drain = None
                if pg is not None:
                    while sampler.dirty() and time.monotonic() - t0 - wall < 60:
                        time.sleep(0.02)
                    drain = time.monotonic() - t0 - wall
            stages = len(wfs) * SHAPES[name].stages
            rows[name] = {"stages": stages, "wall": wall, "stages_per_s": stages / wall, "failures": failures,
                          "max_dirty_age_ms": sampler.max_ms if pg else None, "drain_s": drain, "ids": ids}
            print(f"  {'on ' if pg else 'off'} {name}: {stages / wall:8.1f} stages/s  failures={failures}"
                  + (f"  max dirty age {sampler.max_ms} ms  drain {drain:.2f}s" if pg and drain is not None else ""),
                  file=sys.stderr)
        if pg is not None:
            with SnapshotStore(pg[0], pg[1], namespace) as store:
                all_ids = [i for row in rows.values() for i in row["ids"]]
                stored = {}
                for k in range(0, len(all_ids), 1000):
                    stored.update(store.versions(all_ids[k:k + 1000]))
            backend = backend_for(url, namespace)
            pipe = backend.client.pipeline(transaction=False)
            for wid in all_ids:
                pipe.hget(backend.part(wid).workflow(wid), "ver")
            current = dict(zip(all_ids, (int(v or 0) for v in pipe.execute()), strict=True))
            missing = sum(1 for wid in all_ids if stored.get(wid) != current[wid])
            for row in rows.values():
                row["snapshots_missing"] = missing
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", default="W1,W2,W3")
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--dsn", default=os.environ.get("STABILIZE_POSTGRES_DSN") or DEFAULT_DSN)
    args = p.parse_args(argv)
    names = [n.strip() for n in args.workloads.split(",") if n.strip()]
    schema = f"stz_bench{secrets.token_hex(4)}"
    migrate(args.dsn, schema)
    results: dict[str, list[dict[str, dict[str, Any]]]] = {"off": [], "on": []}
    try:
        with private_redis() as url:
            for r in range(args.rounds):
                order = ("off", "on") if r % 2 == 0 else ("on", "off")
                for mode in order:
                    print(f"round {r + 1}/{args.rounds}: checkpointing {mode}", file=sys.stderr)
                    pg = (args.dsn, schema) if mode == "on" else None
                    results[mode].append(run_mode(url, pg, names, args.scale, args.processes,
                                                  args.concurrency, args.timeout))
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(psycopg.sql.Identifier(schema)))
    _report(names, results, args)
    return 0


def _report(names: list[str], results: dict[str, list[dict[str, dict[str, Any]]]],
            args: argparse.Namespace) -> None:
    print(f"\ncheckpointing on vs off: {args.rounds} round(s), {args.processes} worker processes x "
          f"{args.concurrency} threads, scale {args.scale}; median stages/s over rounds")
    header = f"{'workload':<9}{'stages':>7}{'off st/s':>11}{'on st/s':>11}{'overhead':>10}" \
             f"{'max dirty age':>15}{'drain':>8}{'fail':>6}{'unsaved':>9}"
    print(header)
    print("-" * len(header))
    worst_age = 0
    for name in names:
        off = statistics.median(r[name]["stages_per_s"] for r in results["off"])
        on = statistics.median(r[name]["stages_per_s"] for r in results["on"])
        age = max(r[name]["max_dirty_age_ms"] for r in results["on"])
        drain = max(r[name]["drain_s"] for r in results["on"])
        fails = sum(r[name]["failures"] for mode in results.values() for r in mode)
        unsaved = max(r[name]["snapshots_missing"] for r in results["on"])
        worst_age = max(worst_age, age)
        print(f"{name:<9}{results['on'][0][name]['stages']:>7}{off:>11.1f}{on:>11.1f}"
              f"{(off - on) / off * 100:>9.1f}%{age:>12} ms{drain:>7.2f}s{fails:>6}{unsaved:>9}")
    print(f"\nmax oldest-dirty age observed: {worst_age} ms (target <= 2000 ms); overhead target <= 15 %")
    print("per round (stages/s):")
    for name in names:
        offs = ", ".join(f"{r[name]['stages_per_s']:.0f}" for r in results["off"])
        ons = ", ".join(f"{r[name]['stages_per_s']:.0f}" for r in results["on"])
        print(f"  {name}: off [{offs}]  on [{ons}]")


if __name__ == "__main__":
    sys.exit(main())
