"""``stabilize-redis status`` shows each partition's ready, in-flight, delayed, dead-letter and
dirty counts, the oldest unsaved change and the last checkpoint; it never re-creates a lost
namespace's marker."""

from __future__ import annotations

import json

import pytest
import redis

from stabilize_redis import connect
from stabilize_redis.keys import NamespaceKeys
from stabilize_redis.queue.messages import StartWorkflow
from tests.conftest import delete_namespace
from tests.integration.support import make_stage, make_workflow
from workers.cli import main


def _status(url: str, ns: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:  # type: ignore[type-arg]
    code = main(["status", "--url", url, "--namespace", ns])
    return code, json.loads(capsys.readouterr().out)


def test_status_rows_per_partition(real_target: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    url, ns = real_target
    client = connect(url, ns, dsn="")
    backend = client.backend
    first, second = make_workflow(make_stage("a")), make_workflow(make_stage("a"))
    client.submit(first)
    client.submit(second)
    backend.push(StartWorkflow(execution_id=first.id), delay_seconds=600)
    assert len(backend.fetch("status-test", 1, None, [backend.part(first.id).index])) == 1
    backend.client.hset(backend.part(first.id).checkpoint_info, "at", 1_700_000_000_000)

    code, report = _status(url, ns, capsys)

    assert code == 0 and report["marker"] == "present"
    rows = {r["partition"]: r for r in report["rows"]}
    assert len(rows) == report["partitions"] == backend.keys.partitions
    row = rows[backend.part(first.id).index]
    assert row["in_flight"] == 1 and row["delayed"] == 1 and row["dirty"] >= 1
    assert row["oldest_dirty_s"] is not None and row["oldest_dirty_s"] >= 0
    assert row["last_checkpoint"] == "2023-11-14T22:13:20Z" and row["last_checkpoint_age_s"] > 0
    assert report["totals"]["ready"] + report["totals"]["in_flight"] == 2
    assert report["totals"]["delayed"] == 1 and report["totals"]["dead"] == 0
    assert report["totals"]["dirty"] == 2


def test_status_of_a_lost_namespace_says_so_and_creates_nothing(
        real_target: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    url, ns = real_target
    connect(url, ns, dsn="").submit(make_workflow(make_stage("a")))
    delete_namespace(url, ns)

    code, report = _status(url, ns, capsys)

    assert code == 3 and report["marker"] == "missing" and "restore" in report["hint"]
    assert not redis.Redis.from_url(url).exists(NamespaceKeys(ns, 0).meta)


def test_status_table_form(real_target: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    url, ns = real_target
    connect(url, ns, dsn="")
    assert main(["status", "--url", url, "--namespace", ns, "--table"]) == 0
    out = capsys.readouterr().out
    assert "oldest_dirty_s" in out and "total" in out
