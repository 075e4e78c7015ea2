"""Our side of the benchmark: a private redis-server, worker processes, timed workloads.

Used by ``bench.py`` (our venv). Needs from the engine exactly:
``stabilize_redis.connect(url, namespace)`` -> client with ``.submit(workflow)`` and
``.wait(workflow_id, timeout)`` (returns the final Workflow); ``stabilize_redis.Workflow``,
``StageExecution``, ``TaskExecution``; the CLI ``stabilize-redis worker --app
tests.bench.bench_tasks:registry --url URL --namespace NS --processes N --concurrency C``.

Per-stage CPU: the worker group (every process of its session: supervisor and workers) and the
private redis-server (``INFO cpu``), both sampled once the group is idle after its warm-up and
again as soon as the last workflow is seen finished, so start-up and imports are not counted.
redis-server's CPU includes serving this benchmark's submit and wait calls.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from tests.bench.cpu import SessionCPU, redis_cpu_seconds
from tests.bench.workloads import (
    LOOP_BODY,
    LOOP_PASSES,
    SHAPES,
    add_cpu,
    build,
    summarize,
    warmup_workflow,
    workflow_count,
)

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def private_redis(binary: str = "/usr/bin/redis-server") -> Iterator[str]:
    """Start our own redis-server on a free loopback port (no persistence); kill it after."""
    port = _free_port()
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        r = redis.Redis.from_url(url)
        for _ in range(200):
            with contextlib.suppress(redis.ConnectionError):
                if r.ping():
                    break
            time.sleep(0.025)
        r.close()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _worker_cmd() -> list[str]:
    script = Path(sys.executable).with_name("stabilize-redis")
    if script.exists():
        return [str(script)]
    found = shutil.which("stabilize-redis")
    return [found] if found else [sys.executable, "-m", "workers.cli"]


@contextlib.contextmanager
def worker_group(
    url: str, namespace: str, processes: int, concurrency: int
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """Run ``stabilize-redis worker`` in its own session; SIGTERM the group after."""
    cmd = _worker_cmd() + ["worker", "--app", "tests.bench.bench_tasks:registry", "--url", url]
    cmd += ["--namespace", namespace, "--processes", str(processes), "--concurrency", str(concurrency)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    log = Path(tempfile.mkstemp(prefix="bench-worker-", suffix=".log")[1])
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc, log
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.unlink(missing_ok=True)  # its tail is printed on a failed warm-up


def _own_tcp_ports() -> set[int]:
    """Local TCP ports of this process's sockets (Linux /proc), to tell our client apart."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/self/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


class ClientCommandCounter:
    """Counts commands sent by clients (not those run inside Lua scripts) via MONITOR.

    MONITOR slows the server, so it is used only in a separate, untimed pass. Commands
    from this process (the benchmark's submit/wait client) are counted apart from the
    workers'. Pipelined commands count one each: an upper bound on round trips.
    """

    def __init__(self, url: str) -> None:
        self.by_port: dict[tuple[int, str], int] = {}
        self._conn = redis.Redis.from_url(url)
        self._monitor = self._conn.monitor()
        self._monitor.__enter__()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with contextlib.suppress(Exception):
            for cmd in self._monitor.listen():
                if cmd.get("client_type") == "lua":
                    continue
                key = (int(cmd.get("client_port") or 0), str(cmd.get("command", "")).split(" ", 1)[0].upper())
                self.by_port[key] = self.by_port.get(key, 0) + 1

    def stop(self) -> tuple[dict[str, int], dict[str, int]]:
        """Stop; returns ({command: count} from workers, {command: count} from this process)."""
        own = _own_tcp_ports()
        with contextlib.suppress(Exception):
            self._monitor.connection.disconnect()
        self._thread.join(5)
        self._conn.close()
        workers: dict[str, int] = {}
        ours: dict[str, int] = {}
        for (port, name), count in self.by_port.items():
            side = ours if port in own else workers
            side[name] = side.get(name, 0) + count
        return workers, ours


def command_stats(r: redis.Redis) -> dict[str, int]:
    """``INFO commandstats`` as {command: calls}. Counts include commands run inside scripts."""
    stats = r.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def _warm_up(client: Any, api: Any, proc: subprocess.Popen[bytes], limit: float = 120.0) -> None:
    """Run one trivial workflow; fails fast if the worker group has exited."""
    wf_id = client.submit(warmup_workflow(api, "warmup"))
    deadline = time.monotonic() + limit
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"worker group exited with code {proc.returncode}")
        try:
            client.wait(wf_id, 1.0)
            return
        except TimeoutError:
            if time.monotonic() > deadline:
                raise


def _run_workload(
    client: Any, api: Any, name: str, scale: float, timeout: float
) -> tuple[float, float, float, list[Any]]:
    """Submit all, then wait on each, newest first (``wait`` blocks on the workflow's event
    stream, so the harness stays idle while the engine works). Returns (wall, t0 epoch, submit seconds, finals)."""
    n = workflow_count(name, scale)
    wfs = [build(api, name, f"bench-{name}", i) for i in range(n)]
    t0, t0_epoch = time.monotonic(), time.time()
    for wf in wfs:
        client.submit(wf)
    submit_s = time.monotonic() - t0
    final: list[Any] = []
    for wf in reversed(wfs):
        try:
            final.append(client.wait(wf.id, max(0.1, t0 + timeout - time.monotonic())))
        except Exception:
            final.append(None)
    return time.monotonic() - t0, t0_epoch, submit_s, final[::-1]


def run_redis_side(
    workloads: list[str],
    workers: list[int],
    scale: float,
    concurrency: int,
    timeout: float,
    monitor: bool,
    server: str,
) -> list[dict[str, Any]]:
    """All our rows: each worker count x each workload, plus an optional MONITOR pass."""
    import stabilize_redis as api

    rows: list[dict[str, Any]] = []
    counted: dict[str, dict[str, Any]] = {}
    with private_redis(server) as url:
        r = redis.Redis.from_url(url)
        for n in workers:
            namespace = f"bench{secrets.token_hex(4)}"
            with worker_group(url, namespace, n, concurrency) as (proc, log):
                client = api.connect(url, namespace)
                try:
                    _warm_up(client, api, proc)
                except Exception as e:
                    tail = log.read_text(errors="replace")[-2000:]
                    rows += [
                        {"workload": w, "engine": "redis", "workers": str(n), "error": f"warm-up: {e!r}"}
                        for w in workloads
                    ]
                    print(f"worker log tail:\n{tail}", file=sys.stderr)
                    continue
                cpu = SessionCPU(proc.pid)
                for name in workloads:
                    rows.append(_measure(client, api, r, cpu, name, n, scale, timeout, concurrency))
                    print(f"redis {name} workers={n}: {_progress(rows[-1])}", file=sys.stderr)
                if monitor and n == workers[0]:
                    for name in workloads:
                        counted[name] = _monitor_pass(url, client, api, name, scale, timeout)
        r.close()
    for row in rows:
        if "stages" in row:
            row.update(counted.get(row["workload"], {}))
    return rows


def _measure(
    client: Any,
    api: Any,
    r: redis.Redis,
    cpu: SessionCPU,
    name: str,
    n: int,
    scale: float,
    timeout: float,
    conc: int,
) -> dict[str, Any]:
    """One timed workload: wait for an idle group, sample CPU, run, sample CPU, build the row."""
    idle = cpu.wait_idle()
    r.config_resetstat()
    before, server_before = cpu.sample(), redis_cpu_seconds(r)
    wall, t0_epoch, submit_s, final = _run_workload(client, api, name, scale, timeout)
    after, server_after = cpu.sample(), redis_cpu_seconds(r)
    calls = command_stats(r)
    row = _row(name, n, (wall, t0_epoch), final, scale, calls, conc)
    if "stages" not in row:  # LOOP refused or mis-run: no numbers
        return row
    spent = cpu.delta(before, after)
    add_cpu(row, spent.seconds, server_after - server_before)
    row.update(submit_s=submit_s, worker_processes=spent.processes, worker_cpu_exact=spent.exact and idle)
    if not idle:
        row["worker_cpu_note"] = "the worker group was not idle before the run: start-up CPU may be counted"
    if name == "LOOP":
        return _check_loop_runs(client, final[0], row)
    return row


def _check_loop_runs(client: Any, workflow: Any, row: dict[str, Any]) -> dict[str, Any]:
    """``row``, or an error row when the events do not show every loop stage started LOOP_PASSES times."""
    started = Counter(
        str(e["data"].get("ref_id"))
        for e in client.events(workflow.id)
        if e.get("event_type") == "stage.started" and isinstance(e.get("data"), dict)
    )
    expected = {f"s{i}": LOOP_PASSES for i in range(LOOP_BODY)}
    if dict(started) != expected:
        return {
            **{k: row[k] for k in ("workload", "engine", "workers")},
            "error": f"loop stage starts {dict(started)} != {LOOP_PASSES} each",
        }
    return row


def _progress(row: dict[str, Any]) -> str:
    if "stages_per_s" in row:
        return f"{row['stages_per_s']:.1f} stages/s, worker cpu {row.get('worker_cpu_us_per_stage', 0):.0f} us/stage"
    return str(row.get("unsupported") or row.get("error"))


def _monitor_pass(url: str, client: Any, api: Any, name: str, scale: float, timeout: float) -> dict[str, Any]:
    counter = ClientCommandCounter(url)
    _run_workload(client, api, name, scale, timeout)
    workers, ours = counter.stop()
    stages = workflow_count(name, scale) * SHAPES[name].stages
    return {
        "worker_cmds_per_stage": sum(workers.values()) / stages,
        "harness_cmds_per_stage": sum(ours.values()) / stages,
        "worker_cmds_top": dict(sorted(workers.items(), key=lambda kv: -kv[1])[:10]),
        "harness_cmds_top": dict(sorted(ours.items(), key=lambda kv: -kv[1])[:10]),
    }


def _row(
    name: str,
    n: int,
    timing: tuple[float, float],
    final: list[Any],
    scale: float,
    calls: dict[str, int],
    conc: int,
) -> dict[str, Any]:
    expected = workflow_count(name, scale)
    stages = expected * SHAPES[name].stages
    scripts = sum(calls.get(c, 0) for c in ("evalsha", "eval", "fcall", "evalsha_ro", "eval_ro", "fcall_ro"))
    total = sum(v for k, v in calls.items() if k not in ("config|resetstat", "info"))
    extra = {
        "redis_calls_per_stage": total / stages,
        "evalsha_per_stage": scripts / stages,
        "redis_calls_top": dict(sorted(calls.items(), key=lambda kv: -kv[1])[:8]),
        "processor": f"stabilize-redis worker --processes {n} --concurrency {conc}",
    }
    return summarize(name, "redis", str(n), timing[0], final, expected, extra, timing[1])


class Meter:
    """Wall, worker-group CPU and redis-server CPU over one measured stretch."""

    def __init__(self, cpu: SessionCPU, raw: redis.Redis) -> None:
        self.cpu, self.raw = cpu, raw

    def start(self) -> None:
        self.t0, self.c0, self.r0 = time.perf_counter(), self.cpu.sample(), redis_cpu_seconds(self.raw)

    def stop(self) -> tuple[float, float, float]:
        wall = time.perf_counter() - self.t0
        worker = self.cpu.delta(self.c0, self.cpu.sample()).seconds
        return wall, worker, redis_cpu_seconds(self.raw) - self.r0


@contextlib.contextmanager
def measured_workers(prefix: str, processes: int, concurrency: int) -> Iterator[tuple[Any, Meter, redis.Redis]]:
    """A private redis-server, a namespace ``<prefix>-<random>`` and a worker group on it, warmed
    up and idle: yields (client, meter over the group and the server, raw client)."""
    import stabilize_redis as api

    with private_redis() as url:
        os.environ["STZ_BENCH_URL"] = url
        raw = redis.Redis.from_url(url)
        ns = f"{prefix}-{secrets.token_hex(3)}"
        client = api.connect(url, ns)
        with worker_group(url, ns, processes, concurrency) as (proc, _log):
            client.wait(client.submit(warmup_workflow(api, "warmup")), 120)
            cpu = SessionCPU(os.getsid(proc.pid))
            cpu.wait_idle()
            yield client, Meter(cpu, raw), raw
