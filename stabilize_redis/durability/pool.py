"""The connection pool of the durability layer: one that a silent PostgreSQL cannot hang.

``FencedPool`` is a psycopg ``ConnectionPool`` with two additions:

* **A check that cannot block.** A connection is checked when taken from the pool by one empty
  query whose round trip is bounded by ``check_timeout`` (the stock check waits for ever on a
  black-holed socket). A connection that fails or is late is discarded and another one tried,
  within the pool's ``timeout``.
* **Abort.** ``abort()`` shuts down the socket of every connection the pool made, in use or
  not, without closing or freeing anything: a thread blocked reading from one wakes up with
  ``OperationalError``, and the connection can never send another byte (no late COMMIT). The
  server side of such a connection may still hold a transaction open (and its row locks, until
  ``idle_in_transaction_session_timeout``): ``terminate_backends`` ends those sessions through
  another pool. The checkpointer's watchdog does both to the pool of a pass it abandoned.

Everything else (timeouts, keepalives, server-side limits) is in the connection parameters
``durability.pg.make_pool`` passes.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
import weakref
from typing import Any

import psycopg
from psycopg import pq
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool

_Identity = tuple[Any, Any] | None


def _identity(sock: socket.socket) -> _Identity:
    try:
        return sock.getsockname(), sock.getpeername()
    except OSError:
        return None


def _socket_of(fd: int) -> socket.socket | None:
    """A socket object on a duplicate of ``fd`` (closing it leaves ``fd`` open)."""
    try:
        return socket.socket(fileno=os.dup(fd))
    except OSError:
        return None


def _wait(fd: int, events: int, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise psycopg.OperationalError("connection check timed out")
    poller = select.poll()
    poller.register(fd, events)
    if not poller.poll(remaining * 1000):
        raise psycopg.OperationalError("connection check timed out")


def bounded_check(conn: psycopg.Connection[Any], timeout: float) -> None:
    """Send one empty query on an idle connection and wait at most ``timeout`` seconds for its
    answer; raise ``psycopg.OperationalError`` when it is broken, busy or late.

    It drives libpq directly (its socket is non-blocking) so that no step can wait longer than
    the deadline; the connection is left idle, as found, when it answers."""
    pg = conn.pgconn
    if pg.status != pq.ConnStatus.OK or pg.transaction_status != pq.TransactionStatus.IDLE:
        raise psycopg.OperationalError("connection is not idle")
    deadline = time.monotonic() + timeout
    fd = pg.socket
    pg.send_query(b"")
    while pg.flush():
        _wait(fd, select.POLLOUT, deadline)
    while True:
        pg.consume_input()
        if not pg.is_busy():
            break
        _wait(fd, select.POLLIN, deadline)
    while (result := pg.get_result()) is not None:
        if result.status not in (pq.ExecStatus.EMPTY_QUERY, pq.ExecStatus.COMMAND_OK):
            raise psycopg.OperationalError(f"connection check failed: {pq.ExecStatus(result.status).name}")


class FencedPool(ConnectionPool[psycopg.Connection[TupleRow]]):
    """A ConnectionPool whose check is ``bounded_check`` and that can ``abort()`` its
    connections (see the module docstring). Takes ConnectionPool's keyword arguments except
    ``check`` and ``configure``."""

    def __init__(self, conninfo: str, *, check_timeout: float = 2.0, **kwargs: Any) -> None:
        self.check_timeout = check_timeout
        self._made: weakref.WeakKeyDictionary[psycopg.Connection[Any], tuple[int, _Identity, int]] = \
            weakref.WeakKeyDictionary()
        self._made_lock = threading.Lock()
        super().__init__(conninfo, check=self._check_bounded, configure=self._track, **kwargs)

    def _check_bounded(self, conn: psycopg.Connection[Any]) -> None:
        bounded_check(conn, self.check_timeout)

    def _track(self, conn: psycopg.Connection[Any]) -> None:
        fd = conn.pgconn.socket
        sock = _socket_of(fd)
        ident = _identity(sock) if sock is not None else None
        if sock is not None:
            sock.close()
        with self._made_lock:
            self._made[conn] = (fd, ident, conn.info.backend_pid)

    def backend_pids(self) -> list[int]:
        """Server process ids of the open connections this pool made."""
        with self._made_lock:
            return sorted(pid for conn, (_, _, pid) in self._made.items() if not conn.closed)

    def abort(self) -> int:
        """Shut down the socket of every open connection this pool made; returns how many.
        A descriptor that no longer names the same socket (closed and reused) is left alone."""
        with self._made_lock:
            made = list(self._made.items())
        aborted = 0
        for conn, (fd, ident, _) in made:
            if conn.closed or ident is None:
                continue
            sock = _socket_of(fd)
            if sock is None:
                continue
            try:
                if _identity(sock) == ident:
                    sock.shutdown(socket.SHUT_RDWR)
                    aborted += 1
            except OSError:
                pass
            finally:
                sock.close()
        return aborted


def terminate_backends(pool: ConnectionPool[Any], pids: list[int], application_name: str) -> int:
    """End, through a connection of ``pool``, the server sessions ``pids`` that still carry
    ``application_name`` (so a recycled pid is spared); returns how many were ended. Needs the
    same role as those sessions (or ``pg_signal_backend``)."""
    if not pids:
        return 0
    with pool.connection() as conn:
        rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE pid = ANY(%s) AND application_name = %s", (pids, application_name)).fetchall()
    return sum(1 for (ended,) in rows if ended)
