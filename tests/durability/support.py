"""Helpers of the durability tests: engines with a checkpointer, hash reads, and a TCP proxy in
front of PostgreSQL that can refuse connections (an outage) and accept them again."""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

from stabilize_redis import TaskResult
from stabilize_redis.backend.redis_backend import RedisBackend
from stabilize_redis.durability.checkpointer import Checkpointer, CheckpointSettings
from stabilize_redis.durability.snapshots import SnapshotStore
from stabilize_redis.keys import CHECKPOINT_VERSION_FIELD, WORKFLOW_VERSION_FIELD
from tests.integration.support import Engine, make_engine


def engine_with_tasks(target: tuple[str, str], snapshots: SnapshotStore | None = None) -> Engine:
    """An engine on ``target`` whose task ``t`` succeeds at once with a small output; its store
    and client read through ``snapshots`` when given."""
    eng = make_engine(target)
    eng.registry.register("t", lambda stage: TaskResult.success(outputs={f"out_{stage.ref_id}": 1}))
    eng.store.snapshots = snapshots
    eng.client.store.snapshots = snapshots
    return eng


def checkpointer(backend: RedisBackend, store: SnapshotStore, **settings: Any) -> Checkpointer:
    return Checkpointer(backend, store, CheckpointSettings(**settings))


def versions(backend: RedisBackend, workflow_id: str) -> tuple[int, int]:
    """(ver, ckpt) of a workflow hash (0 for a missing field)."""
    ver, ckpt = backend.client.hmget(backend.part(workflow_id).workflow(workflow_id),
                                     [WORKFLOW_VERSION_FIELD, CHECKPOINT_VERSION_FIELD])
    return int(ver or 0), int(ckpt or 0)


def is_dirty(backend: RedisBackend, workflow_id: str) -> bool:
    return backend.client.zscore(backend.part(workflow_id).dirty, workflow_id) is not None


def dirty_count(backend: RedisBackend) -> int:
    pipe = backend.client.pipeline(transaction=False)
    for part in backend.keys.all_partitions():
        pipe.zcard(part.dirty)
    return sum(int(n) for n in pipe.execute())


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target``. ``down()`` closes the listener and every
    forwarded connection (clients get 'connection refused'); ``up()`` listens again on the same
    port.

    ``freeze()`` makes it a black hole: every socket stays open and the kernel keeps
    acknowledging bytes, but nothing is forwarded either way, so neither side can tell it from
    a peer that went silent; ``freeze(new_connections=False)`` black-holes only the connections
    open now (a firewall that lost their state) while new ones are forwarded. ``freeze_on(marker)``
    freezes the moment a client sends bytes containing ``marker`` (those bytes are held too).
    ``thaw()`` forwards everything held and resumes. ``frozen`` is set at the first freeze."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._gates: list[threading.Event] = []
        self._freeze_new = False
        self._trigger: tuple[bytes, bool] | None = None
        self._lock = threading.Lock()
        self.frozen = threading.Event()
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = int(probe.getsockname()[1])
        probe.close()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
            gates, self._gates = self._gates, []
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()
        for gate in gates:
            gate.set()  # held bytes go nowhere: their sockets are closed

    def freeze(self, new_connections: bool = True) -> None:
        with self._lock:
            self._freeze(new_connections)

    def _freeze(self, new_connections: bool) -> None:
        for gate in self._gates:
            gate.clear()
        self._freeze_new = new_connections
        self.frozen.set()

    def freeze_on(self, marker: bytes, new_connections: bool = True) -> None:
        with self._lock:
            self._trigger = (marker, new_connections)

    def thaw(self) -> None:
        with self._lock:
            self._freeze_new = False
            self._trigger = None
            for gate in self._gates:
                gate.set()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            gate = threading.Event()
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._conns += [client, upstream]
                self._gates.append(gate)
                if not self._freeze_new:
                    gate.set()
            for a, b, from_client in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pipe, args=(a, b, gate, from_client), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, gate: threading.Event, from_client: bool) -> None:
        try:
            while data := src.recv(65536):
                if from_client:
                    with self._lock:
                        if self._trigger is not None and self._trigger[0] in data:
                            self._freeze(self._trigger[1])
                            self._trigger = None
                gate.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def dsn(self, base: str) -> str:
        """``base`` (a postgresql:// URL on 127.0.0.1:5432) pointed at the proxy."""
        return base.replace(f"{self.target[0]}:{self.target[1]}", f"127.0.0.1:{self.port}")
