"""Benchmark driver: stabilize-redis vs stabilize 0.33.1, Celery and RQ on trivial-task workloads.

Run from the repository root under our venv::

    python -m tests.bench.bench                       # everything, full size
    python -m tests.bench.bench --only stabilize      # stabilize side only
    python -m tests.bench.bench --scale 0.1 --workloads W1,L1 --workers 2
    python -m tests.bench.bench --only peers          # Celery and RQ only
    python -m tests.bench.bench --rounds 3            # sides alternate; median and range

Workloads (each stage has one trivial task): W1 50 workflows x 10-stage chain; W2 10 x
(1 -> 50 parallel -> 1); W3 1000 single-stage workflows; L1 one 100-stage chain; LOOP one
10-stage chain whose last stage jumps back to the first (``TaskResult.jump_to``) until it has
run 10 times (100 stage runs; "not supported by this engine yet" while jumps are refused).
Our engine runs against a private redis-server with 1 and 2 worker processes; stabilize
runs in a subprocess under its own venv (``bench_stabilize.py``: SQLite WAL and
PostgreSQL, each with dedup on and off, in ``start()`` and ``process_all()`` modes).
Wall time is first submit to all workflows terminal; failures are workflows not SUCCEEDED.
CPU per stage (µs): ours, the worker processes' user+sys CPU and the private redis-server's
(``INFO cpu``) over the timed part only; stabilize's, its one process (processor, store and
this harness's submit and probe; SQLite runs in it, a PostgreSQL server's CPU is not counted).
Celery and RQ (``bench_peers.py``, their own venv /tmp/peers-venv, a private redis-server) run
W1, W2, W3 and L1 with the same trivial task: Celery with ``--processes`` workers x
``--concurrency`` of each ``--celery-pool`` (solo, 1 per process, and threads by default), RQ with ``--processes`` ``rq
worker`` processes of ``--rq-worker-class`` (SimpleWorker by default: no fork per job; RQ has no
threads). ``x celery`` / ``x rq`` are each row's stages/s over that peer's fastest row on the
workload (several pools or worker classes can be given as comma lists).
With ``--rounds N`` every side runs N times, the order of the sides reversed each round; each
row is then the median over the rounds (``stages/s min``/``max`` give the range).
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``tests.bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.workloads import SHAPES, UNSUPPORTED  # noqa: E402

HERE = Path(__file__).resolve().parent
STZ_VENV = Path("/tmp/stz-venv")
STZ_REQUIREMENT = "stabilize[postgres]==0.33.1"
PEERS_VENV = Path("/tmp/peers-venv")
# rq 3.0.0 left dependents of a finished job in its ready registry (until the 600 s maintenance
# pass) when two workers contended on them: chains stalled; 2.12.0 does not.
PEERS_REQUIREMENTS = ("celery[redis]==5.7.0", "rq==2.12.0")


def stabilize_python(given: str | None) -> str:
    """The python of stabilize's venv; creates /tmp/stz-venv with pip when missing."""
    if given:
        return given
    python = STZ_VENV / "bin" / "python"
    probe = [str(python), "-c", "import stabilize, psycopg"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return str(python)
    print(f"creating {STZ_VENV} with {STZ_REQUIREMENT} ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(STZ_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", STZ_REQUIREMENT], check=True)
    return str(python)


def peers_python(given: str | None) -> str:
    """The python of the peers' venv; creates /tmp/peers-venv with pip when missing."""
    if given:
        return given
    python = PEERS_VENV / "bin" / "python"
    probe = [str(python), "-c", "import celery, rq, sys; sys.exit(not rq.__version__.startswith('2.'))"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return str(python)
    print(f"creating {PEERS_VENV} with {' '.join(PEERS_REQUIREMENTS)} ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *PEERS_REQUIREMENTS], check=True)
    return str(python)


def run_peers_side(args: argparse.Namespace, workloads: list[str]) -> list[dict[str, Any]]:
    chosen = [w for w in workloads if w in ("W1", "W2", "W3", "L1")]
    if not chosen:
        return []
    cmd = [peers_python(args.peers_python), str(HERE / "bench_peers.py"), "--workloads", ",".join(chosen)]
    cmd += ["--scale", str(args.scale), "--timeout", str(args.timeout), "--peers", args.peers]
    cmd += ["--processes", str(args.peer_processes), "--concurrency", str(args.concurrency)]
    cmd += ["--celery-pools", args.celery_pool, "--rq-worker-classes", args.rq_worker_class]
    cmd += ["--redis-server", args.redis_server]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()
    return json.loads(out[-1]) if out else [{"engine": "peers", "error": "bench_peers.py printed nothing"}]


def run_stabilize_side(args: argparse.Namespace) -> list[dict[str, Any]]:
    cmd = [stabilize_python(args.stabilize_python), str(HERE / "bench_stabilize.py")]
    cmd += ["--workloads", args.workloads, "--scale", str(args.scale), "--timeout", str(args.timeout)]
    cmd += ["--configs", args.stz_configs, "--modes", args.stz_modes, "--pg-url", args.pg_url]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()
    return (
        json.loads(out[-1])
        if out
        else [{"engine": "stabilize", "error": "bench_stabilize.py printed nothing"}]
    )


def run_our_side(args: argparse.Namespace, workloads: list[str]) -> list[dict[str, Any]]:
    try:
        import stabilize_redis  # noqa: F401
        from tests.bench.bench_redis import run_redis_side
    except ImportError as e:
        if args.only == "redis":
            raise
        print(f"skipping stabilize-redis: {e!r}", file=sys.stderr)
        return []
    workers = [int(w) for w in args.workers.split(",") if w]
    return run_redis_side(
        workloads, workers, args.scale, args.concurrency, args.timeout, args.monitor, args.redis_server
    )


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Ratios of stages/s to the fastest stabilize row per workload and backend."""
    fastest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        for backend in ("sqlite", "pg"):
            if row.get("engine", "").startswith(f"stz-{backend}") and "stages_per_s" in row:
                key = (row["workload"], backend)
                if key not in fastest or row["stages_per_s"] > fastest[key]["stages_per_s"]:
                    fastest[key] = row
    for row in rows:
        for backend in ("sqlite", "pg"):
            best = fastest.get((row.get("workload", ""), backend))
            if best and "stages_per_s" in row and best["stages_per_s"] > 0:
                row[f"x_{backend}"] = row["stages_per_s"] / best["stages_per_s"]
    for peer in ("celery", "rq"):
        peers: dict[str, dict[str, Any]] = {}  # the peer's fastest row (pool / worker class) per workload
        for r in rows:
            if not (r.get("engine", "").startswith(f"{peer}-") and r.get("stages_per_s")):
                continue
            if r["workload"] not in peers or r["stages_per_s"] > peers[r["workload"]]["stages_per_s"]:
                peers[r["workload"]] = r
        for row in rows:
            best = peers.get(row.get("workload", ""))
            if best and "stages_per_s" in row:
                row[f"x_{peer}"] = row["stages_per_s"] / best["stages_per_s"]


def merge_rounds(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per (workload, engine, workers): each number the median over the rounds that
    measured it, ``stages_per_s_min``/``_max`` and ``wall_s_min``/``_max`` the range, failures
    summed; a row that errored in any round is kept as that error."""
    if len(rounds) == 1:
        return rounds[0]
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for rows in rounds:
        for row in rows:
            key = (str(row.get("workload")), str(row.get("engine")), str(row.get("workers")))
            groups.setdefault(key, []).append(row)
    merged = []
    for found in groups.values():
        bad = [r for r in found if "error" in r or UNSUPPORTED in r or "stages_per_s" not in r]
        if bad:
            merged.append(bad[0])
            continue
        row = dict(found[0])
        for key, value in found[0].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values = [r[key] for r in found if isinstance(r.get(key), (int, float))]
                row[key] = statistics.median(values)
        row["failures"] = sum(int(r.get("failures") or 0) for r in found)
        for key in ("stages_per_s", "wall_s"):
            row[f"{key}_min"] = min(r[key] for r in found)
            row[f"{key}_max"] = max(r[key] for r in found)
        row["rounds"] = len(found)
        merged.append(row)
    return merged


COLUMNS: list[tuple[str, str, str]] = [  # header, key, format
    ("workload", "workload", "s"),
    ("engine/config", "engine", "s"),
    ("workers", "workers", "s"),
    ("wall s", "wall_s", ".2f"),
    ("submit s", "submit_s", ".2f"),
    ("stages/s", "stages_per_s", ".1f"),
    ("stages/s min", "stages_per_s_min", ".1f"),
    ("stages/s max", "stages_per_s_max", ".1f"),
    ("failures", "failures", "d"),
    ("worker cpu µs/stage", "worker_cpu_us_per_stage", ".0f"),
    ("redis-server cpu µs/stage", "server_cpu_us_per_stage", ".0f"),
    ("x stz-sqlite-fastest", "x_sqlite", ".2f"),
    ("x stz-pg-fastest", "x_pg", ".2f"),
    ("x celery", "x_celery", ".2f"),
    ("x rq", "x_rq", ".2f"),
    ("redis calls/stage", "redis_calls_per_stage", ".1f"),
    ("evalsha/stage", "evalsha_per_stage", ".2f"),
    ("worker cmds/stage", "worker_cmds_per_stage", ".1f"),
    ("harness cmds/stage", "harness_cmds_per_stage", ".1f"),
    ("hop ms p50", "hop_ms_median", ".1f"),
]


def render(rows: list[dict[str, Any]]) -> str:
    """The aligned plain-text table; rows that failed to run are listed under it."""
    table = [[h for h, _, _ in COLUMNS]]
    table += [
        ["-" if r.get(k) is None else format(r[k], f) for _, k, f in COLUMNS]
        for r in rows
        if "error" not in r and UNSUPPORTED not in r
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(
            v.ljust(w) if i < 3 else v.rjust(w) for i, (v, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in table
    ]
    lines.insert(1, "-" * len(lines[0]))
    lines += [
        f"{r['workload']} {r['engine']} workers={r['workers']}: not supported by this engine yet ({r[UNSUPPORTED]})"
        for r in rows
        if UNSUPPORTED in r and "error" not in r
    ]
    lines += [
        f"ERROR {r.get('workload', '?')} {r.get('engine', '?')} {r.get('workers', '')}: {r['error']}"
        for r in rows
        if "error" in r
    ]
    return "\n".join(lines)


def _fastest(
    rows: list[dict[str, Any]], workload: str, backend: str, mode: str = ""
) -> dict[str, Any] | None:
    found = [
        r
        for r in rows
        if r.get("workload") == workload
        and r.get("engine", "").startswith(f"stz-{backend}")
        and r.get("engine", "").endswith(mode)
        and "stages_per_s" in r
    ]
    return max(found, key=lambda r: r["stages_per_s"], default=None)


def notes(rows: list[dict[str, Any]], workloads: list[str]) -> list[str]:
    out = []
    for w in workloads:
        for b in ("sqlite", "pg"):
            best, best_start = _fastest(rows, w, b), _fastest(rows, w, b, "/start")
            if best and best_start:
                out.append(
                    f"{w} fastest stabilize {b}: {best['engine']} {best['stages_per_s']:.1f} stages/s; "
                    f"fastest in start() mode: {best_start['engine']} {best_start['stages_per_s']:.1f}"
                )
    for row in rows:
        if row.get("workload") == "L1" and row.get("hop_ms_median") is not None:
            out.append(
                f"L1 {row['engine']} w={row['workers']}: hop p50 {row['hop_ms_median']:.1f} ms, "
                f"mean {row['hop_ms_mean']:.2f} ms (stage end_time diffs); wall/stage {row['hop_ms_wall']:.2f} ms"
            )
    out += loop_notes(rows)
    out.append("worker cpu µs/stage = user+sys CPU of the worker processes (ours: every process of the")
    out.append(
        "  worker group's session, from each one's CPU clock; stabilize: its single process) / stages,"
    )
    out.append("  timed part only; redis-server cpu µs/stage = INFO cpu used_cpu_user+sys delta / stages")
    out.append("  Celery / RQ: every process of their worker session (parents and pool children)")
    out.append("  Celery / RQ wall: first submit to the last task's date_done / ended_at, seen by reading")
    out.append("  those records every 10 ms; x celery / x rq = the row's stages/s / that peer's fastest")
    out.append("redis calls/stage = INFO commandstats calls (incl. commands run inside Lua scripts) / stages")
    out.append("worker / harness cmds/stage = commands sent by the worker processes / by this benchmark's")
    out.append("  submit+wait client, counted by MONITOR in an untimed --monitor pass with 1 worker process")
    out.append(
        "  (commands run inside Lua not counted; pipelined ones count one each: upper bound on round trips)"
    )
    for row in rows:
        if row.get("engine") != "redis" or row.get("workers") != "2" or row.get("workload") in ("L1", "LOOP"):
            continue
        if "stages_per_s" not in row:
            continue
        w, ours = row["workload"], row["stages_per_s"]
        tops = [r for r in (_fastest(rows, w, "sqlite"), _fastest(rows, w, "pg")) if r]
        tops_start = [
            r for r in (_fastest(rows, w, "sqlite", "/start"), _fastest(rows, w, "pg", "/start")) if r
        ]
        if tops and tops_start:
            top, top_start = max(r["stages_per_s"] for r in tops), max(r["stages_per_s"] for r in tops_start)
            out.append(
                f"target {w} (>=5x fastest stabilize, 2 workers): {ours / top:.2f}x; "
                f"vs fastest start()-mode stabilize: {ours / top_start:.2f}x"
            )
    return out


def loop_ratios(rows: list[dict[str, Any]]) -> None:
    """On each measured LOOP row: its per-stage wall and CPU over the L1 row of the same engine
    and worker count (``x_L1_wall``, ``x_L1_worker_cpu``, ``x_L1_server_cpu``)."""
    chains = {(r["engine"], r["workers"]): r for r in rows if r.get("workload") == "L1" and "stages" in r}
    for row in rows:
        chain = chains.get((row.get("engine"), row.get("workers")))
        if row.get("workload") != "LOOP" or "stages" not in row or chain is None:
            continue
        for key, name in (
            ("wall_ms_per_stage", "x_L1_wall"),
            ("worker_cpu_us_per_stage", "x_L1_worker_cpu"),
            ("server_cpu_us_per_stage", "x_L1_server_cpu"),
        ):
            if row.get(key) is not None and chain.get(key):
                row[name] = row[key] / chain[key]


def loop_notes(rows: list[dict[str, Any]]) -> list[str]:
    """One line per LOOP row: per-stage wall and CPU beside L1's, or why there is no number."""
    out = []
    for row in rows:
        if row.get("workload") != "LOOP":
            continue
        who = f"LOOP {row['engine']} w={row['workers']}"
        if UNSUPPORTED in row or "error" in row:
            reason = "not supported by this engine yet" if UNSUPPORTED in row else "error"
            out.append(f"{who}: {reason} (no LOOP/L1 ratio)")
            continue
        line = f"{who}: wall {row['wall_ms_per_stage']:.2f} ms/stage"
        if row.get("worker_cpu_us_per_stage") is not None:
            line += f", worker cpu {row['worker_cpu_us_per_stage']:.0f} µs/stage"
        if "x_L1_wall" in row:
            line += f"; LOOP/L1 wall {row['x_L1_wall']:.2f}x"
            if "x_L1_worker_cpu" in row:
                line += f", worker cpu {row['x_L1_worker_cpu']:.2f}x"
            if "x_L1_server_cpu" in row:
                line += f", redis-server cpu {row['x_L1_server_cpu']:.2f}x"
            line += " (target <= 1.25x)"
        else:
            line += "; run L1 too for the LOOP/L1 ratio"
        out.append(line)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default="W1,W2,W3,L1,LOOP")
    ap.add_argument("--only", choices=("all", "stabilize", "redis", "peers"), default="all")
    ap.add_argument("--rounds", type=int, default=1, help="run every side N times, alternating order")
    ap.add_argument("--scale", type=float, default=1.0, help="multiplier for workflow counts (L1 stays 1)")
    ap.add_argument("--workers", default="1,2", help="worker process counts for stabilize-redis")
    ap.add_argument("--concurrency", type=int, default=4, help="stabilize-redis worker --concurrency")
    ap.add_argument("--stabilize-python", default=None, help="python of a venv with stabilize 0.33.1")
    ap.add_argument("--stz-configs", default="sqlite,sqlite-nodedup,pg,pg-nodedup")
    ap.add_argument(
        "--stz-modes", default="start,drain", help="start = processor.start(); drain = process_all()"
    )
    ap.add_argument("--peers-python", default=None, help="python of a venv with celery and rq")
    ap.add_argument("--peers", default="celery,rq", help="which peers to run")
    ap.add_argument("--peer-processes", type=int, default=2, help="Celery / RQ worker processes")
    ap.add_argument("--celery-pool", default="solo,threads", help="prefork, threads, solo (comma list)")
    ap.add_argument("--rq-worker-class", default="rq.worker.SimpleWorker", help="comma list")
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--redis-server", default="/usr/bin/redis-server")
    ap.add_argument("--timeout", type=float, default=600.0, help="per workload, seconds")
    ap.add_argument(
        "--monitor", action="store_true", help="extra untimed MONITOR pass: client commands per stage"
    )
    ap.add_argument("--json", default=None, help="also write all rows to this file")
    args = ap.parse_args(argv)
    workloads = [w for w in args.workloads.split(",") if w]
    for w in workloads:
        if w not in SHAPES:
            ap.error(f"unknown workload {w!r}")

    # SIGTERM (e.g. from ``timeout``) unwinds like Ctrl-C, so the private redis-server and the
    # worker group (its own session) are stopped rather than left running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    every_side: list[tuple[str, Callable[[], list[dict[str, Any]]]]] = [
        ("redis", lambda: run_our_side(args, workloads)),
        ("stabilize", lambda: run_stabilize_side(args)),
        ("peers", lambda: run_peers_side(args, workloads)),
    ]
    sides = [run for side, run in every_side if args.only in ("all", side)]
    rounds: list[list[dict[str, Any]]] = []
    for n in range(max(1, args.rounds)):
        measured: list[dict[str, Any]] = []
        for run in sides if n % 2 == 0 else sides[::-1]:
            measured += run()
        rounds.append(measured)
    rows = merge_rounds(rounds)
    rows.sort(key=lambda r: workloads.index(r["workload"]) if r.get("workload") in workloads else 99)
    add_ratios(rows)
    loop_ratios(rows)
    print(render(rows))
    print()
    print("\n".join(notes(rows, workloads)))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0 if all("error" not in r and not r.get("failures") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
