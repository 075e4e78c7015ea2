"""One workflow PostgreSQL refuses (or whose hash cannot be read) is quarantined with its reason;
every other workflow of its batch is written in the same pass, and nothing is retried forever."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import pytest

from stabilize_redis.backend.redis_backend import RedisBackend
from stabilize_redis.decisions.codec import pack, unpack
from stabilize_redis.durability import quarantine
from stabilize_redis.durability.snapshots import SnapshotStore, snapshot_fields
from stabilize_redis.keys import EVENT_FIELD, META_FIELD
from tests.durability.support import checkpointer, dirty_count, engine_with_tasks, is_dirty, versions
from tests.integration.support import make_stage, make_workflow
from workers.cli import main


def _rename(backend: RedisBackend, wid: str, name: str) -> None:
    key = backend.part(wid).workflow(wid)
    meta = unpack(backend.client.hget(key, META_FIELD))
    backend.client.hset(key, META_FIELD, pack({**meta, "name": name}))


def _nul_in_name(backend: RedisBackend, wid: str) -> None:
    _rename(backend, wid, "bad\x00name")


def _event(backend: RedisBackend, wid: str, data: str) -> None:
    head = json.dumps({"event_id": f"poison-{wid}", "event_type": "test.poison", "entity_type": "workflow",
                       "entity_id": wid, "workflow_id": wid, "timestamp": 1})
    text = head[:-1] + ',"data":' + data + "}"  # raw JSON text: json.dumps would not write these values
    backend.client.xadd(backend.part(wid).events(wid), {EVENT_FIELD: text})


def _nan_in_event(backend: RedisBackend, wid: str) -> None:
    _event(backend, wid, '{"value":NaN}')


def _nul_in_event(backend: RedisBackend, wid: str) -> None:
    _event(backend, wid, '{"value":"a\\u0000b"}')


def _undecodable_meta(backend: RedisBackend, wid: str) -> None:
    backend.client.hset(backend.part(wid).workflow(wid), META_FIELD, b"\xc1")  # 0xc1: never valid msgpack


POISONS: dict[str, tuple[Callable[[RedisBackend, str], None], str]] = {
    "nul-in-name": (_nul_in_name, "NUL"),
    "nan-in-event": (_nan_in_event, "InvalidTextRepresentation"),
    "nul-in-event": (_nul_in_event, "UntranslatableCharacter"),
    "undecodable-meta": (_undecodable_meta, "cannot be read as a snapshot"),
}


@pytest.mark.parametrize("poison", sorted(POISONS))
def test_one_poisoned_workflow_never_holds_back_the_other_twenty(
        poison: str, real_target: tuple[str, str], snapshot_store: SnapshotStore,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="stabilize_redis.checkpointer")
    eng = engine_with_tasks(real_target)
    backend = eng.store.backend
    wfs = [eng.run(make_workflow(make_stage("a"), name=f"w{i}")) for i in range(21)]
    bad, good = wfs[7].id, [wf.id for wf in wfs if wf.id != wfs[7].id]
    spoil, says = POISONS[poison]
    spoil(backend, bad)  # straight into Redis, past every validation (an old version, a hand edit)
    ckpt = checkpointer(backend, snapshot_store, batch_size=200)

    stats = ckpt.run_once(all_partitions=True)  # one pass: the batch holds all 21

    stored = snapshot_store.versions(good + [bad])
    assert stored == {wid: versions(backend, wid)[0] for wid in good}, "the 20 good ones are written at once"
    assert bad not in stored
    for wid in good:
        row = snapshot_store.get(wid)
        assert row is not None and row.fields() == snapshot_fields(backend.load_hash(wid))
        assert not is_dirty(backend, wid)
    assert stats.quarantined == 1
    entries = quarantine.entries(backend.client, backend.keys)
    assert [(e.workflow_id, e.version) for e in entries] == [(bad, versions(backend, bad)[0])]
    assert says in entries[0].reason, entries[0].reason
    assert not is_dirty(backend, bad), "quarantined: not retried by every pass"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and bad in r.getMessage()]
    assert len(errors) == 1 and "quarantined" in errors[0].getMessage()

    again = ckpt.run_once(interval=0.0, all_partitions=True)
    assert again.read == 0 and again.quarantined == 0
    assert dirty_count(backend) == 0


def test_a_quarantined_workflow_is_retried_when_it_changes_and_leaves_quarantine_once_saved(
        real_target: tuple[str, str], snapshot_store: SnapshotStore, capsys: pytest.CaptureFixture[str]) -> None:
    eng = engine_with_tasks(real_target)
    backend = eng.store.backend
    wf = make_workflow(make_stage("a"), name="fine")
    other = make_workflow(make_stage("a"), name="other")
    eng.store.store(wf)
    eng.store.store(other)
    _nul_in_name(backend, wf.id)
    ckpt = checkpointer(backend, snapshot_store)
    assert ckpt.run_once(interval=0.0, all_partitions=True).quarantined == 1
    assert snapshot_store.get(other.id) is not None

    assert main(["quarantine", "list", "--url", real_target[0], "--namespace", real_target[1]]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["id"], e["version"]) for e in listed] == [(wf.id, 1)] and "NUL" in listed[0]["reason"]

    eng.store.cancel(wf.id, "tester", "a later commit")  # still NUL in the name: quarantined again
    assert is_dirty(backend, wf.id)
    assert ckpt.run_once(interval=0.0, all_partitions=True).quarantined == 1
    assert [(e.workflow_id, e.version) for e in quarantine.entries(backend.client, backend.keys)] == [(wf.id, 2)]
    assert snapshot_store.get(wf.id) is None

    _rename(backend, wf.id, "fixed")  # an operator repairs the hash, then asks for a retry
    assert main(["quarantine", "retry", wf.id, "--url", real_target[0], "--namespace", real_target[1]]) == 0
    stats = ckpt.run_once(interval=0.0, all_partitions=True)
    assert (stats.written, stats.quarantined) == (1, 0)
    row = snapshot_store.get(wf.id)
    assert row is not None and row.name == "fixed" and row.version == versions(backend, wf.id)[0] == 2
    assert quarantine.entries(backend.client, backend.keys) == []
    assert main(["quarantine", "retry", wf.id, "--url", real_target[0], "--namespace", real_target[1]]) == 1
