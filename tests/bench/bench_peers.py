"""The peers' side of the benchmark: Celery and RQ on W1, W2, W3 and L1 with a trivial task.

Runs under the peers' venv (``/tmp/peers-venv``: celery and rq from the package registry, never
project dependencies), started by ``bench.py`` like ``bench_stabilize.py``; prints progress on
stderr and all rows as JSON on its last stdout line. Both peers get a private ``redis-server``
(``bench_redis.private_redis``) as broker and result store.

Mapping of the workloads: a chain is a Celery ``chain`` of immutable signatures / RQ jobs each
``depends_on`` the one before; the fan (W2) is ``head | chord(group(50), tail)`` / 50 RQ jobs
``depends_on`` the head and a tail ``depends_on`` all 50; a single-stage workflow is one task.

Timing: wall is first submit to the last workflow's end as the peer records it (Celery's
``date_done`` of the last task's result, RQ's job ``ended_at``); the harness sees
completion by reading those records with one MGET/pipeline every 10 ms, so polling neither
loads the workers nor sets the figure. CPU per stage: every process of the worker session
(``cpu.SessionCPU``: the Celery/RQ parents and their pool children) and the redis-server
(``INFO cpu``), sampled once the workers are idle after a warm-up task and again when the last
workflow is seen finished.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``tests.bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import redis  # noqa: E402

from tests.bench.bench_redis import private_redis  # noqa: E402
from tests.bench.cpu import SessionCPU, redis_cpu_seconds  # noqa: E402
from tests.bench.workloads import SHAPES, add_cpu, summarize, workflow_count  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
WORKLOADS = ("W1", "W2", "W3", "L1")
POLL_S = 0.010
RQ_QUEUE = "bench"
RQ_TASK = "tests.bench.peers_tasks.noop"


@contextlib.contextmanager
def worker_session(commands: list[list[str]], url: str) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``commands`` side by side under one ``sh`` in a new session (its pid is the session
    id ``SessionCPU`` samples); SIGTERM the whole process group after, SIGKILL if it lingers."""
    script = " ".join(f"{shlex.join(c)} &" for c in commands) + " wait"
    env = {
        **os.environ,
        "BENCH_PEERS_REDIS_URL": url,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.Popen(
        ["sh", "-c", script], cwd=REPO, env=env, stdout=sys.stderr, start_new_session=True
    )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _epoch(text: str | bytes | None) -> float | None:
    """Epoch seconds of an ISO timestamp (Celery's ``date_done``, RQ's ``ended_at``; UTC)."""
    if not text:
        return None
    if isinstance(text, bytes):
        text = text.decode()
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


# A probe reads the end records of a list of task ids: [(succeeded, end epoch s) or None if pending].
Probe = Callable[[list[str]], list[tuple[bool, float | None] | None]]


def celery_probe(r: redis.Redis) -> Probe:
    def probe(ids: list[str]) -> list[tuple[bool, float | None] | None]:
        out: list[tuple[bool, float | None] | None] = []
        for raw in r.mget([f"celery-task-meta-{i}" for i in ids]):
            if raw is None:
                out.append(None)
                continue
            meta = json.loads(raw)
            if meta.get("status") not in ("SUCCESS", "FAILURE", "REVOKED"):
                out.append(None)
                continue
            out.append((meta["status"] == "SUCCESS", _epoch(meta.get("date_done"))))
        return out

    return probe


def rq_probe(r: redis.Redis) -> Probe:
    def probe(ids: list[str]) -> list[tuple[bool, float | None] | None]:
        pipe = r.pipeline(transaction=False)
        for i in ids:
            pipe.hmget(f"rq:job:{i}", "status", "ended_at")
        out: list[tuple[bool, float | None] | None] = []
        for status, ended in pipe.execute():
            status = (status or b"").decode()
            done = status in ("finished", "failed", "stopped", "canceled")
            out.append((status == "finished", _epoch(ended)) if done else None)
        return out

    return probe


def wait_all(probe: Probe, ids: list[str], deadline: float) -> dict[str, tuple[bool, float | None]]:
    """Poll every POLL_S until each id has an end record or ``deadline`` (monotonic) passes."""
    done: dict[str, tuple[bool, float | None]] = {}
    pending = list(ids)
    while pending and time.monotonic() < deadline:
        still = []
        for start in range(0, len(pending), 1000):
            chunk = pending[start : start + 1000]
            for task_id, seen in zip(chunk, probe(chunk), strict=True):
                if seen is None:
                    still.append(task_id)
                else:
                    done[task_id] = seen
        pending = still
        if pending:
            time.sleep(POLL_S)
    return done


def _workflow(ids: list[str], done: dict[str, tuple[bool, float | None]], last: str) -> Any:
    """A stand-in with the attributes ``workloads.summarize`` reads (status, end_time in epoch ms,
    stages with ref_id/end_time for L1's hops); None when the workflow's last task never ended."""
    if last not in done:
        return None
    ok, end = done[last]
    stages = [
        SimpleNamespace(ref_id=f"s{n}", end_time=(done[i][1] or 0) * 1000.0)
        for n, i in enumerate(ids)
        if i in done and done[i][1] is not None
    ]
    status = SimpleNamespace(name="SUCCEEDED" if ok else "FAILED")
    return SimpleNamespace(status=status, end_time=None if end is None else end * 1000.0, stages=stages)


def submit_celery(name: str) -> tuple[str, list[str]]:
    """Submit one workflow of ``name``; returns (id of its last task, ids of its chain tasks in order)."""
    from celery import chain, chord

    from tests.bench.peers_tasks import noop_task

    if name in ("W1", "L1"):
        res = chain(*[noop_task.si() for _ in range(SHAPES[name].stages)]).apply_async()
        ids, node = [], res
        while node is not None:
            ids.append(node.id)
            node = node.parent
        return res.id, ids[::-1]
    if name == "W2":
        res = (noop_task.si() | chord([noop_task.si() for _ in range(50)], noop_task.si())).apply_async()
        return res.id, []
    res = noop_task.apply_async()
    return res.id, []


def submit_rq(queue: Any, name: str) -> tuple[str, list[str]]:
    """Submit one workflow of ``name`` as RQ jobs linked by ``depends_on``."""
    if name in ("W1", "L1"):
        ids: list[str] = []
        prev = None
        for _ in range(SHAPES[name].stages):
            prev = queue.enqueue(RQ_TASK, depends_on=prev)
            ids.append(prev.id)
        return ids[-1], ids
    if name == "W2":
        head = queue.enqueue(RQ_TASK)
        fan = [queue.enqueue(RQ_TASK, depends_on=head) for _ in range(50)]
        return queue.enqueue(RQ_TASK, depends_on=fan).id, []
    return queue.enqueue(RQ_TASK).id, []


def measure(
    name: str,
    engine: str,
    workers: str,
    submit: Callable[[str], tuple[str, list[str]]],
    probe: Probe,
    r: redis.Redis,
    cpu: SessionCPU,
    scale: float,
    timeout: float,
) -> dict[str, Any]:
    """One timed workload: idle workers, sample CPU, submit all, see all end, sample CPU, row."""
    n = workflow_count(name, scale)
    idle = cpu.wait_idle()
    before, server_before = cpu.sample(), redis_cpu_seconds(r)
    t0, t0_epoch = time.monotonic(), time.time()
    submitted = [submit(name) for _ in range(n)]
    submit_s = time.monotonic() - t0
    lasts = [last for last, _ in submitted]
    watch = lasts + [i for _, chain_ids in submitted if name == "L1" for i in chain_ids]
    done = wait_all(probe, watch, t0 + timeout)
    wall = time.monotonic() - t0
    after, server_after = cpu.sample(), redis_cpu_seconds(r)
    finals = [_workflow(ids, done, last) for last, ids in submitted]
    row = summarize(name, engine, workers, wall, finals, n, {"submit_s": submit_s}, t0_epoch)
    spent = cpu.delta(before, after)
    add_cpu(row, spent.seconds, server_after - server_before)
    row.update(worker_processes=spent.processes, worker_cpu_exact=spent.exact and idle)
    row["completion"] = f"end records read every {POLL_S * 1000:.0f} ms (one MGET/pipeline)"
    return row


def _warm_up(submit: Callable[[str], tuple[str, list[str]]], probe: Probe, proc: Any) -> None:
    last, _ = submit("W3")
    deadline = time.monotonic() + 120
    while last not in wait_all(probe, [last], min(deadline, time.monotonic() + 1)):
        if proc.poll() is not None:
            raise RuntimeError(f"workers exited with code {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError("warm-up task did not finish in 120 s")


def run_peer(
    engine: str,
    workers: str,
    commands: list[list[str]],
    submit: Callable[[str], tuple[str, list[str]]],
    probe: Probe,
    url: str,
    workloads: list[str],
    scale: float,
    timeout: float,
) -> list[dict[str, Any]]:
    """Start the peer's workers, warm up, measure each workload, stop them."""
    r = redis.Redis.from_url(url)
    rows: list[dict[str, Any]] = []
    with worker_session(commands, url) as proc:
        try:
            _warm_up(submit, probe, proc)
        except Exception as e:
            return [
                {"workload": w, "engine": engine, "workers": workers, "error": repr(e)} for w in workloads
            ]
        cpu = SessionCPU(proc.pid)
        for name in workloads:
            rows.append(measure(name, engine, workers, submit, probe, r, cpu, scale, timeout))
            print(
                f"{engine} {name}: {rows[-1]['stages_per_s']:.1f} stages/s, "
                f"worker cpu {rows[-1].get('worker_cpu_us_per_stage', 0):.0f} us/stage",
                file=sys.stderr,
            )
    r.close()
    return rows


def celery_commands(pool: str, processes: int, concurrency: int) -> list[list[str]]:
    celery = str(Path(sys.executable).with_name("celery"))
    base = [celery, "-A", "tests.bench.peers_tasks", "worker", "--pool", pool, "--loglevel", "WARNING"]
    base += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    if pool != "solo":
        base += ["--concurrency", str(concurrency)]
    return [base + ["-n", f"bench{i}@%h"] for i in range(processes)]


def rq_commands(url: str, processes: int, worker_class: str) -> list[list[str]]:
    rq = str(Path(sys.executable).with_name("rq"))
    base = [rq, "worker", "-u", url, "-w", worker_class, "-S", "json", "-q", "--disable-job-desc-logging"]
    return [base + ["-n", f"bench{i}-{os.getpid()}", RQ_QUEUE] for i in range(processes)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--peers", default="celery,rq")
    ap.add_argument("--processes", type=int, default=2, help="worker processes of each peer")
    ap.add_argument("--concurrency", type=int, default=4, help="Celery --concurrency per process")
    ap.add_argument("--celery-pools", default="solo,threads", help="comma list of prefork, threads, solo")
    ap.add_argument("--rq-worker-classes", default="rq.worker.SimpleWorker", help="comma list")
    ap.add_argument("--redis-server", default="/usr/bin/redis-server")
    args = ap.parse_args(argv)
    workloads = [w for w in args.workloads.split(",") if w in WORKLOADS]
    peers = [p for p in args.peers.split(",") if p]
    rows: list[dict[str, Any]] = []
    with private_redis(args.redis_server) as url:
        os.environ["BENCH_PEERS_REDIS_URL"] = url  # before peers_tasks builds the Celery app
        r = redis.Redis.from_url(url)
        if "celery" in peers:
            for pool in args.celery_pools.split(","):
                conc = 1 if pool == "solo" else args.concurrency
                rows += run_peer(
                    f"celery-{pool}",
                    f"{args.processes}x{conc}",
                    celery_commands(pool, args.processes, args.concurrency),
                    submit_celery,
                    celery_probe(r),
                    url,
                    workloads,
                    args.scale,
                    args.timeout,
                )
            gc.collect()  # results' __del__ unsubscribes: while the redis-server is still up
        if "rq" in peers:
            from rq import Queue
            from rq.serializers import JSONSerializer

            queue = Queue(RQ_QUEUE, connection=r, serializer=JSONSerializer)
            for cls in args.rq_worker_classes.split(","):
                rows += run_peer(
                    f"rq-{cls.rsplit('.', 1)[-1]}",
                    f"{args.processes}x1",
                    rq_commands(url, args.processes, cls),
                    lambda name: submit_rq(queue, name),
                    rq_probe(r),
                    url,
                    workloads,
                    args.scale,
                    args.timeout,
                )
        r.close()
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
