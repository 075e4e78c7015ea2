"""The checkpointer's outage lines tell the truth: "recovered" only once an operation really
reached PostgreSQL again (a pass with nothing to write proves nothing), one line when it goes
down, and "still down" lines at a bounded rate in between."""

from __future__ import annotations

import logging
import re
import time

import pytest

from stabilize_redis.durability.snapshots import SnapshotStore
from tests.durability.support import TcpProxy, checkpointer, dirty_count, engine_with_tasks, versions
from tests.integration.support import make_stage, make_workflow, wait_until

REPORT_EVERY = 1.5



def _lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "stabilize_redis.checkpointer" and text in r.getMessage()]


def test_recovery_is_logged_only_after_postgres_answers_again(
        real_target: tuple[str, str], pg_dsn: str, pg_schema: str, namespace: str, proxy: TcpProxy,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="stabilize_redis.checkpointer")
    eng = engine_with_tasks(real_target)
    backend = eng.store.backend
    store = SnapshotStore(proxy.dsn(pg_dsn), pg_schema, namespace, timeout=1.0)
    ckpt = checkpointer(backend, store, poll=0.05, max_backoff=0.2, outage_report_every=REPORT_EVERY)
    direct = SnapshotStore(pg_dsn, pg_schema, namespace)
    ckpt.start()
    try:
        first = eng.run(make_workflow(make_stage("a"), name="first"))
        wait_until(lambda: direct.get(first.id) is not None, timeout=10, what="the first checkpoint")

        proxy.down()  # connections are refused from now on
        down_at = time.monotonic()
        eng.run(make_workflow(make_stage("a"), name="while-down"))
        wait_until(lambda: ckpt.failing == ["postgres"], timeout=10, what="the outage to be noticed")
        assert len(_lines(caplog, "PostgreSQL unreachable")) == 1

        # Another checkpointer, which does reach PostgreSQL, saves everything: ours now has nothing
        # to write, so its passes no longer touch PostgreSQL, which is still refusing it.
        checkpointer(backend, direct).drain_all()
        assert dirty_count(backend) == 0
        wait_until(lambda: _lines(caplog, "recovered") or len(_lines(caplog, "still down")) >= 2, timeout=15,
                   what="idle passes while PostgreSQL is still down")
        assert _lines(caplog, "recovered") == [], "recovery logged while PostgreSQL was still refusing connections"
        assert ckpt.failing == ["postgres"]

        late = eng.run(make_workflow(make_stage("a"), name="dirty-again"))  # dirty work, still down
        wait_until(lambda: len(_lines(caplog, "still down")) >= 3, timeout=10, what="another still-down line")
        assert _lines(caplog, "recovered") == []

        proxy.up()
        wait_until(lambda: _lines(caplog, "recovered"), timeout=15, what="the recovery line")
        up_at = time.monotonic()
        wait_until(lambda: dirty_count(backend) == 0, timeout=15, what="the catch-up")
        assert direct.versions([late.id]) == {late.id: versions(backend, late.id)[0]}
        assert len(_lines(caplog, "recovered")) == 1
        assert len(_lines(caplog, "PostgreSQL unreachable")) == 1, "one line when it went down"
        still = _lines(caplog, "still down")
        assert len(still) <= (up_at - down_at) / REPORT_EVERY + 1, f"{len(still)} still-down lines: not rate-bounded"
        attempts = int(re.search(r"\((\d+) failed attempts", still[-1]).group(1))  # type: ignore[union-attr]
        assert attempts > len(still) + 1, "fewer lines than failed attempts"
        assert ckpt.failing == []
    finally:
        ckpt.stop()
        store.close()
        direct.close()
