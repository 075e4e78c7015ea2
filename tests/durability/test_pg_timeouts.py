"""PostgreSQL connections of the durability layer cannot hang for ever: the server cancels long
statements and kills idle transactions, TCP keepalives and ``tcp_user_timeout`` are set, and
taking a connection from the pool never blocks on a connection that went silent."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from stabilize_redis.durability.pg import make_pool
from tests.durability.support import TcpProxy
from tests.integration.support import wait_until


def test_pool_connections_carry_server_timeouts_and_tcp_keepalives(pg_dsn: str) -> None:
    pool = make_pool(pg_dsn, name="stz-test-timeouts", timeout=3.0)
    try:
        with pool.connection() as conn:
            assert conn.execute("SHOW statement_timeout").fetchone() == ("30s",)
            assert conn.execute("SHOW idle_in_transaction_session_timeout").fetchone() == ("1min",)
            params = conn.info.get_parameters()
            assert (params["keepalives"], params["keepalives_idle"], params["keepalives_interval"],
                    params["keepalives_count"]) == ("1", "10", "5", "3")
            assert params["tcp_user_timeout"] == "30000"
            assert params["connect_timeout"] == "3"
    finally:
        pool.close()


def test_a_statement_running_too_long_is_canceled_by_the_server(pg_dsn: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STABILIZE_POSTGRES_STATEMENT_TIMEOUT", "0.5")
    pool = make_pool(pg_dsn, name="stz-test-statement", timeout=3.0)
    try:
        with pool.connection() as conn:
            started = time.monotonic()
            with pytest.raises(psycopg.errors.QueryCanceled):
                conn.execute("SELECT pg_sleep(20)")
            assert time.monotonic() - started < 5
    finally:
        pool.close()


def test_a_transaction_left_idle_is_ended_by_the_server(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STABILIZE_POSTGRES_IDLE_TX_TIMEOUT", "0.5")
    pool = make_pool(pg_dsn, name="stz-test-idle-tx", timeout=3.0)
    conn = pool.getconn()
    try:
        conn.execute("SELECT 1")  # not autocommit: a transaction is now open, and left idle
        pid = conn.info.backend_pid
        with psycopg.connect(pg_dsn, autocommit=True) as watcher:
            wait_until(lambda: watcher.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                                               (pid,)).fetchone() == (0,),
                       timeout=10, what="the server to end the idle transaction's session")
        with pytest.raises((psycopg.errors.IdleInTransactionSessionTimeout, psycopg.OperationalError)):
            conn.execute("SELECT 1")
    finally:
        pool.putconn(conn)
        pool.close()


def test_settings_the_dsn_spells_out_win(pg_dsn: str) -> None:
    dsn = f"{pg_dsn}?options=-c%20statement_timeout%3D2500&keepalives_idle=42"
    pool = make_pool(dsn, name="stz-test-dsn-wins", timeout=3.0)
    try:
        with pool.connection() as conn:
            assert conn.execute("SHOW statement_timeout").fetchone() == ("2500ms",)
            assert conn.execute("SHOW idle_in_transaction_session_timeout").fetchone() == ("1min",)
            assert conn.info.get_parameters()["keepalives_idle"] == "42"
    finally:
        pool.close()


def test_taking_a_connection_never_blocks_on_one_that_went_silent(pg_dsn: str, proxy: TcpProxy,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STABILIZE_POSTGRES_CHECK_TIMEOUT", "0.5")
    pool = make_pool(proxy.dsn(pg_dsn), name="stz-test-check", min_size=1, max_size=2, timeout=4.0)
    try:
        with pool.connection() as conn:
            conn.execute("SELECT 1")  # the pool now holds one idle connection through the proxy
        proxy.freeze(new_connections=False)  # that one goes silent; new connections still work
        got: list[object] = []

        def take() -> None:
            with pool.connection() as conn:
                got.append(conn.execute("SELECT 2").fetchone())

        started = time.monotonic()
        taker = threading.Thread(target=take, daemon=True)
        taker.start()
        taker.join(15)
        assert not taker.is_alive(), "pool.connection() hung on a silent connection"
        assert got == [(2,)], "a fresh connection was given instead"
        assert time.monotonic() - started < 4.0
    finally:
        pool.close()
