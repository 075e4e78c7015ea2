"""Each script in ``lua/`` called directly on real Redis with crafted KEYS/ARGV: the return codes
and effects its header documents. Keys live under the test's own namespace (removed after it).
``includes/enqueue.lua`` and ``includes/stream_ids.lua`` are exercised through the scripts that
include them (enqueue, ack, dead letters; evict, checkpoint_ack, dirty_remark)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from stabilize_redis.backend.scripts import Scripts, script_source
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.keys import CONSUMER_GROUP, PartitionKeys
from stabilize_redis.queue.messages import CompleteWorkflow, StartStage, StartWorkflow


@dataclass
class Lua:
    """A client on real Redis, the engine's scripts, and the keys of partition 0 of the test's
    namespace."""

    client: Any
    scripts: Scripts
    part: PartitionKeys

    def run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """Call ``lua/<name>.lua`` (through ``Scripts`` when it is registered there)."""
        script = getattr(self.scripts, name, None) or self.client.register_script(script_source(name))
        return script(keys=keys, args=args)

    def wf(self, wid: str = "w1") -> str:
        return self.part.workflow(wid)

    def delivered(self, payload: str = "{}", msg_id: str = "m1") -> str:
        """Put an entry on the ready stream and read it as a consumer: its entry id."""
        if not self.client.exists(self.part.ready):
            self.client.xgroup_create(self.part.ready, CONSUMER_GROUP, id="0", mkstream=True)
        self.client.xadd(self.part.ready, {"id": msg_id, "m": payload})
        reply = self.client.xreadgroup(CONSUMER_GROUP, "c1", {self.part.ready: ">"}, count=1)
        return str(reply[0][1][0][0].decode())

    def pending(self) -> int:
        return int(self.client.xpending(self.part.ready, CONSUMER_GROUP)["pending"])

    def ready(self) -> list[str]:
        """Message ids on the ready stream, oldest first."""
        return [f[b"id"].decode() for _, f in self.client.xrange(self.part.ready)]

    def commit(self, t: Transition, message_id: str = "", entry_id: str = "", wid: str = "w1",
               **options: Any) -> Any:
        p = self.part
        keys = [self.wf(wid), p.ready, p.delayed, p.delayed_payloads, p.done, p.dirty, p.events(wid),
                p.processed(wid), p.expiring]
        return self.run("commit", keys, t.to_script_args(message_id, entry_id, CONSUMER_GROUP, **options))


@pytest.fixture
def lua(real_target: tuple[str, str]) -> Iterator[Lua]:
    url, ns = real_target
    client = redis.Redis.from_url(url)
    yield Lua(client, Scripts(client), PartitionKeys(ns, 0))
    client.close()


def now_ms(lua: Lua) -> int:
    sec, usec = lua.client.time()
    return int(sec) * 1000 + int(usec) // 1000


# -- commit ----------------------------------------------------------------------------------


def test_commit_of_a_processed_message_is_a_duplicate_that_only_acks(lua: Lua) -> None:
    entry = lua.delivered()
    lua.client.zadd(lua.part.done, {"m1": 1})
    t = Transition("w1")
    t.writes["f"] = b"x"
    assert lua.commit(t, "m1", entry) == [0]
    assert lua.client.hgetall(lua.wf()) == {}
    assert lua.pending() == 0 and lua.ready() == []


def test_commit_with_a_stale_read_set_conflicts_naming_the_field_and_writes_nothing(lua: Lua) -> None:
    entry = lua.delivered()
    lua.client.hset(lua.wf(), mapping={"s:a": b"old", "v:s:a": 2, "c:j:b": 1})
    stale = Transition("w1")
    stale.check("s:a", 1)
    stale.writes["s:a"] = b"new"
    assert lua.commit(stale, "m1", entry) == [-1, b"s:a"]
    counter = Transition("w1")
    counter.expect_counter("j:b", 0)
    assert lua.commit(counter, "m1", entry) == [-1, b"c:j:b"]
    assert lua.client.hget(lua.wf(), "s:a") == b"old"
    assert lua.pending() == 1  # not acked: the handler re-reads and decides again
    assert lua.client.zscore(lua.part.done, "m1") is None
    assert lua.client.zscore(lua.part.processed("w1"), "m1") is None


def test_commit_writes_bump_versions_and_record_the_message_the_ack_and_the_dirty_mark(lua: Lua) -> None:
    entry = lua.delivered()
    lua.client.hset(lua.wf(), mapping={"s:a": b"old", "v:s:a": 1, "gone": b"1", "v:gone": 1})
    t = Transition("w1")
    t.check("s:a", 1)
    t.writes["s:a"] = b"new"
    t.deletes.append("gone")
    t.push(StartStage(execution_id="w1", stage_id="a", message_id="next"))
    t.push(StartStage(execution_id="w1", stage_id="b", message_id="later"), 5.0)
    t.event("stage.started", "stage", "a", {})
    assert lua.commit(t, "m1", entry) == [1, 0]
    h = lua.client.hgetall(lua.wf())
    assert (h[b"s:a"], h[b"v:s:a"], h[b"ver"]) == (b"new", b"2", b"1")
    assert b"gone" not in h and b"v:gone" not in h
    assert lua.ready() == ["next"]
    assert lua.client.zscore(lua.part.delayed, "later") > now_ms(lua) + 4000
    assert json.loads(lua.client.hget(lua.part.delayed_payloads, "later"))["stage_id"] == "b"
    assert lua.client.zscore(lua.part.dirty, "w1") is not None
    # Recorded with the workflow (it leaves with it), not in the partition's windowed record.
    assert lua.client.zscore(lua.part.processed("w1"), "m1") is not None
    assert lua.client.zscore(lua.part.done, "m1") is None
    assert lua.pending() == 0
    assert [json.loads(f[b"e"])["event_type"] for _, f in lua.client.xrange(lua.part.events("w1"))] \
        == ["stage.started"]


def test_commit_that_only_acks_bumps_no_version_and_marks_nothing_dirty(lua: Lua) -> None:
    assert lua.commit(Transition("w1"), "m1") == [1, 0]
    assert lua.client.hget(lua.wf(), "ver") is None
    assert lua.client.zscore(lua.part.dirty, "w1") is None
    # No workflow hash: the id goes to the windowed record, no per-workflow key is created.
    assert lua.client.zscore(lua.part.done, "m1") is not None
    assert not lua.client.exists(lua.part.processed("w1"))


def test_commit_of_a_message_in_the_workflows_record_is_a_duplicate(lua: Lua) -> None:
    lua.client.hset(lua.wf(), mapping={"ver": 1})
    lua.client.zadd(lua.part.processed("w1"), {"m1": 1})
    entry = lua.delivered()
    t = Transition("w1")
    t.writes["f"] = b"x"
    assert lua.commit(t, "m1", entry) == [0]
    assert lua.client.hget(lua.wf(), "f") is None and lua.pending() == 0


def test_commit_marked_windowed_records_in_the_partition_record_even_with_a_workflow(lua: Lua) -> None:
    lua.client.hset(lua.wf(), mapping={"ver": 1})
    assert lua.commit(Transition("w1"), "m1", windowed=True) == [1, 0]
    assert lua.client.zscore(lua.part.done, "m1") is not None
    assert not lua.client.exists(lua.part.processed("w1"))


def test_commit_caps_the_event_stream_when_asked(lua: Lua) -> None:
    for i in range(400):
        t = Transition("w1")
        t.event("stage.started", "stage", f"s{i}", {})
        lua.commit(t, f"m{i}", event_cap=100)
    # MAXLEN ~ trims whole stream nodes: about the cap is kept, never fewer.
    assert 100 <= lua.client.xlen(lua.part.events("w1")) < 400


def test_commit_that_finishes_a_workflow_makes_its_keys_expire_and_one_that_reopens_it_persists_them(
        lua: Lua) -> None:
    p = lua.part
    lua.client.hset(lua.wf(), mapping={"ver": 1})
    done = Transition("w1")
    done.writes["st"] = b"SUCCEEDED"
    done.event("workflow.completed", "workflow", "w1", {})
    assert lua.commit(done, "m1", finished_ttl_ms=60_000) == [1, 0]
    for key in (lua.wf(), p.events("w1"), p.processed("w1")):
        assert 0 < lua.client.pttl(key) <= 60_000, key
    assert lua.client.zscore(p.expiring, "w1") > now_ms(lua)
    again = Transition("w1")
    again.writes["st"] = b"RUNNING"
    assert lua.commit(again, "m2", finished_ttl_ms=60_000) == [1, 0]
    for key in (lua.wf(), p.events("w1"), p.processed("w1")):
        assert lua.client.pttl(key) == -1, key
    assert lua.client.zscore(p.expiring, "w1") is None


def test_a_message_recorded_for_an_expiring_workflow_expires_with_it(lua: Lua) -> None:
    lua.client.hset(lua.wf(), mapping={"ver": 1})
    lua.client.pexpire(lua.wf(), 60_000)  # finished earlier; its record did not exist yet
    assert lua.commit(Transition("w1"), "late", finished_ttl_ms=60_000) == [1, 0]
    assert 0 < lua.client.pttl(lua.part.processed("w1")) <= 60_000


def test_commit_releases_a_counters_message_exactly_when_it_reaches_its_stored_threshold(lua: Lua) -> None:
    lua.client.hset(lua.wf(), "t:j:d", 2)
    released = []
    for n in range(3):
        t = Transition("w1")
        t.count("j:d", StartStage(execution_id="w1", stage_id="d", message_id=f"s{n}"))
        released.append(lua.commit(t)[1])
    assert released == [0, 1, 0]
    assert lua.ready() == ["s1"]
    assert lua.client.hget(lua.wf(), "c:j:d") == b"3"


def test_commit_settles_a_halted_stage_with_the_downstreams_that_can_no_longer_start(lua: Lua) -> None:
    # a -> b -> c, and x; b and c each have one upstream (dead threshold 1).
    lua.client.hset(lua.wf(), mapping={"d:a": "b", "d:b": "c", "t:k:b": 1, "t:k:c": 1, "t:settled": 4})
    t = Transition("w1")
    t.settle("a", True, CompleteWorkflow(execution_id="w1", message_id="cw1"))
    assert lua.commit(t) == [1, 0]
    h = lua.client.hgetall(lua.wf())
    assert [h.get(b"z:" + s) for s in (b"a", b"b", b"c", b"x")] == [b"h", b"h", b"h", None]
    assert (h[b"c:settled"], h[b"c:halted"], h[b"c:k:b"], h[b"c:k:c"]) == (b"3", b"3", b"1", b"1")
    assert lua.ready() == []


def test_commit_releases_the_workflows_completion_once(lua: Lua) -> None:
    lua.client.hset(lua.wf(), mapping={"t:settled": 1})
    first = Transition("w1")
    first.settle("a", False, CompleteWorkflow(execution_id="w1", message_id="cw1"))
    assert lua.commit(first) == [1, 1]
    again = Transition("w1")
    again.settle("a", False, CompleteWorkflow(execution_id="w1", message_id="cw2"))  # counted once
    again.request_completion(CompleteWorkflow(execution_id="w1", message_id="cw3"))
    assert lua.commit(again) == [1, 0]
    assert lua.ready() == ["cw1"]
    assert lua.client.hget(lua.wf(), "c:settled") == b"1" and lua.client.hget(lua.wf(), "cw") == b"1"


def test_commit_unsettle_takes_a_stage_off_the_counts_and_lets_completion_be_released_again(lua: Lua) -> None:
    lua.client.hset(lua.wf(), mapping={"t:settled": 1, "c:settled": 1, "c:halted": 1, "z:a": "h", "cw": 1})
    t = Transition("w1")
    t.unsettle("a")
    t.reset_counter("j:a", 0)
    t.settle("a", False, CompleteWorkflow(execution_id="w1", message_id="cw2"))
    assert lua.commit(t) == [1, 1]
    h = lua.client.hgetall(lua.wf())
    assert (h[b"z:a"], h[b"c:settled"], h[b"c:halted"], h[b"c:j:a"]) == (b"1", b"1", b"0", b"0")
    assert lua.ready() == ["cw2"]


# -- read_workflow ---------------------------------------------------------------------------


def test_read_workflow_returns_meta_counters_stages_with_neighbours_and_the_dedup_flag(lua: Lua) -> None:
    lua.client.hset(lua.wf(), mapping={"meta": b"M", "v:meta": 3, "s:a": b"A", "v:s:a": 1, "s:b": b"B",
                                       "v:s:b": 2, "d:a": "b", "u:b": "a", "c:settled": 1, "c:j:b": 1, "t:j:b": 2})
    lua.client.zadd(lua.part.done, {"m1": 1})
    lua.client.zadd(lua.part.processed("w1"), {"m2": 1})
    keys = [lua.wf(), lua.part.done, lua.part.processed("w1")]
    down = lua.run("read_workflow", keys, ["m1", "down", "a", "c:j: t:j:", "c:settled", "t:settled"])
    # b's join needs 2 completions: a completion only counts toward it, so its record stays unread
    assert down == [1, b"M", b"3", 2, b"1", None, b"a", b"A", b"1", None, None, b"b", None, None, b"1", b"2"]
    lua.client.hset(lua.wf(), "t:j:b", 1)  # a join this completion alone can release: record read
    down = lua.run("read_workflow", keys, ["m1", "down", "a", "c:j: t:j:"])
    assert down == [1, b"M", b"3", 0, b"a", b"A", b"1", None, None, b"b", b"B", b"2", b"1", b"1"]
    up = lua.run("read_workflow", keys, ["other", "up", "b", ""])
    assert up == [0, b"M", b"3", 0, b"b", b"B", b"2", b"a", b"A", b"1"]


# -- submit ----------------------------------------------------------------------------------


def submit(lua: Lua, mode: str, msg_id: str) -> Any:
    p = lua.part
    keys = [lua.wf(), p.ready, p.delayed, p.delayed_payloads, p.workflows, p.dirty, p.events("w1")]
    start = StartWorkflow(execution_id="w1", message_id=msg_id).encode()
    return lua.run("submit", keys, ["w1", mode, json.dumps([[msg_id, start]]), json.dumps(['{"e":1}']),
                                    "meta", b"M", "st", b"NOT_STARTED"])


def test_submit_stores_a_new_workflow_once_and_each_mode_answers_for_an_existing_one(lua: Lua) -> None:
    assert submit(lua, "new", "s1") == [1]
    h = lua.client.hgetall(lua.wf())
    assert h == {b"meta": b"M", b"v:meta": b"1", b"st": b"NOT_STARTED", b"v:st": b"1", b"ver": b"1"}
    assert lua.client.zscore(lua.part.workflows, "w1") is not None
    assert lua.client.zscore(lua.part.dirty, "w1") is not None
    assert lua.client.xlen(lua.part.events("w1")) == 1
    assert lua.ready() == ["s1"]
    assert submit(lua, "new", "s2") == [0]
    assert submit(lua, "launch", "s3") == [0]
    assert submit(lua, "start", "s4") == [2]
    assert lua.ready() == ["s1", "s4"]
    assert lua.client.xlen(lua.part.events("w1")) == 1


# -- promote_delayed / reschedule / dead_letter / replay_dead --------------------------------


def test_promote_delayed_moves_due_messages_reports_the_next_due_time_and_trims_the_dedup_record(lua: Lua) -> None:
    p, now = lua.part, now_ms(lua)
    lua.client.zadd(p.delayed, {"due": now - 10, "later": now + 60_000})
    lua.client.hset(p.delayed_payloads, mapping={"due": b"D", "later": b"L"})
    lua.client.zadd(p.done, {"old": now - 10_000, "recent": now})
    lua.client.zadd(p.expiring, {"expired": now - 10, "alive": now + 60_000})
    lua.client.zadd(p.workflows, {"expired": 1, "alive": 2})
    lua.client.zadd(p.dirty, {"expired": 1})
    keys = [p.delayed, p.delayed_payloads, p.ready, p.done, p.expiring, p.workflows, p.dirty]
    assert lua.run("promote_delayed", keys, [10, 5000]) == [1, now + 60_000]
    assert [(f[b"id"], f[b"m"]) for _, f in lua.client.xrange(p.ready)] == [(b"due", b"D")]
    assert lua.client.hkeys(p.delayed_payloads) == [b"later"]
    assert lua.client.zrange(p.done, 0, -1) == [b"recent"]
    # A finished workflow whose keys expired leaves the index and the dirty set.
    assert lua.client.zrange(p.workflows, 0, -1) == [b"alive"] and lua.client.zcard(p.dirty) == 0
    assert lua.client.zrange(p.expiring, 0, -1) == [b"alive"]
    lua.client.delete(p.delayed)
    assert lua.run("promote_delayed", keys, [10, 5000]) == [0, -1]


def test_reschedule_delays_a_failed_message_until_its_attempts_are_used_then_dead_letters_it(lua: Lua) -> None:
    p = lua.part
    keys = [p.ready, p.delayed, p.delayed_payloads, p.dead]
    entry = lua.delivered(msg_id="m1")
    assert lua.run("reschedule", keys, [entry, CONSUMER_GROUP, "m1", b"P2", 30_000, 2, 3, "boom"]) == 1
    assert lua.pending() == 0 and lua.ready() == []
    assert lua.client.hget(p.delayed_payloads, "m1") == b"P2"
    assert lua.client.zscore(p.delayed, "m1") > now_ms(lua) + 20_000
    again = lua.delivered(msg_id="m1")
    assert lua.run("reschedule", keys, [again, CONSUMER_GROUP, "m1", b"P3", 0, 3, 3, "boom"]) == 2
    [(_, dead)] = lua.client.xrange(p.dead)
    assert (dead[b"id"], dead[b"m"], dead[b"reason"], dead[b"attempts"], dead[b"error"]) == \
        (b"m1", b"P3", b"max_attempts", b"3", b"boom")
    assert lua.pending() == 0


def test_dead_letter_moves_an_entry_with_its_reason_unless_it_was_already_processed(lua: Lua) -> None:
    p = lua.part
    keys = [p.ready, p.dead, p.done, p.processed("w1")]
    entry = lua.delivered(msg_id="m1")
    assert lua.run("dead_letter", keys, [entry, CONSUMER_GROUP, "m1", b"P", "no_handler", 1, "why", "1"]) == 1
    [(_, dead)] = lua.client.xrange(p.dead)
    assert (dead[b"reason"], dead[b"error"], dead[b"attempts"]) == (b"no_handler", b"why", b"1")
    assert lua.pending() == 0 and lua.client.xlen(p.ready) == 0
    lua.client.zadd(p.done, {"m2": 1})
    dup = lua.delivered(msg_id="m2")
    assert lua.run("dead_letter", keys, [dup, CONSUMER_GROUP, "m2", b"P", "unknown_target", 1, "", "1"]) == 0
    assert lua.client.xlen(p.dead) == 1 and lua.pending() == 0
    lua.client.zadd(p.processed("w1"), {"m3": 1})  # processed, recorded with its workflow
    dup = lua.delivered(msg_id="m3")
    assert lua.run("dead_letter", keys, [dup, CONSUMER_GROUP, "m3", b"P", "unknown_target", 1, "", "1"]) == 0
    assert lua.client.xlen(p.dead) == 1 and lua.pending() == 0


def test_replay_dead_puts_a_letter_back_on_the_ready_stream_once(lua: Lua) -> None:
    p = lua.part
    dead_id = lua.client.xadd(p.dead, {"id": "m1", "m": b"old"}).decode()
    assert lua.run("replay_dead", [p.dead, p.ready], [dead_id, b"fresh", "m1"]) == 1
    assert [(f[b"id"], f[b"m"]) for _, f in lua.client.xrange(p.ready)] == [(b"m1", b"fresh")]
    assert lua.client.xlen(p.dead) == 0
    assert lua.run("replay_dead", [p.dead, p.ready], [dead_id, b"fresh", "m1"]) == 0



def test_hand_back_moves_a_delivered_entry_to_the_tail_for_another_consumer(lua: Lua) -> None:
    p = lua.part
    entry = lua.delivered(payload="P1", msg_id="m1")
    lua.client.xadd(p.ready, {"id": "m2", "m": "P2"})
    new_id = lua.run("hand_back", [p.ready], [CONSUMER_GROUP, entry])
    assert new_id and new_id.decode() != entry
    assert lua.pending() == 0 and lua.ready() == ["m2", "m1"]  # same message, now at the tail
    reply = lua.client.xreadgroup(CONSUMER_GROUP, "c2", {p.ready: ">"}, count=10)
    assert [(f[b"id"], f[b"m"]) for _, f in reply[0][1]] == [(b"m2", b"P2"), (b"m1", b"P1")]
    assert lua.run("hand_back", [p.ready], [CONSUMER_GROUP, entry]) is None  # gone: nothing happens

# -- evict -----------------------------------------------------------------------------------


def test_evict_keeps_a_workflow_for_each_documented_reason_and_removes_it_when_all_hold(lua: Lua) -> None:
    p = lua.part
    keys = [lua.wf(), p.events("w1"), p.workflows, p.dirty, p.processed("w1")]
    lua.client.zadd(p.processed("w1"), {"m1": 1})

    def evict(version: int = 4) -> Any:
        return lua.run("evict", keys, ["w1", version, ",SUCCEEDED,TERMINAL,"])

    assert evict() == [0, b"gone"]
    lua.client.hset(lua.wf(), mapping={"st": "RUNNING", "ver": 4, "ckpt": 3})
    assert evict() == [0, b"status"]
    lua.client.hset(lua.wf(), "st", "SUCCEEDED")
    assert evict(5) == [0, b"version"]
    assert evict() == [0, b"unsaved"]
    lua.client.hset(lua.wf(), "ckpt", 4)
    lua.client.zadd(p.dirty, {"w1": 1})
    assert evict() == [0, b"dirty"]
    lua.client.zrem(p.dirty, "w1")
    archived = lua.client.xadd(p.events("w1"), {"e": "1"})
    lua.client.xadd(p.events("w1"), {"e": "2"})
    lua.client.hset(lua.wf(), "ckpt_ev", archived)
    assert evict() == [0, b"events"]
    assert lua.client.zscore(p.dirty, "w1") is not None  # the checkpointer is to take them
    lua.client.zrem(p.dirty, "w1")
    lua.client.hset(lua.wf(), "ckpt_ev", lua.client.xrevrange(p.events("w1"), count=1)[0][0])
    lua.client.zadd(p.workflows, {"w1": 1})
    assert evict() == [1]
    assert lua.client.exists(lua.wf(), p.events("w1"), p.processed("w1")) == 0
    assert lua.client.zscore(p.workflows, "w1") is None


# -- checkpointer scripts --------------------------------------------------------------------


def test_checkpoint_read_returns_due_dirty_workflows_with_their_unarchived_events(lua: Lua) -> None:
    p = lua.part
    now = now_ms(lua)
    for wid, status in (("w1", "SUCCEEDED"), ("w2", "RUNNING"), ("w3", "RUNNING")):
        lua.client.hset(lua.wf(wid), mapping={"st": status, "ver": 1})
    lua.client.zadd(p.dirty, {"w1": now, "w2": now, "w3": now - 120_000, "gone": now - 120_000})
    archived = lua.client.xadd(p.events("w1"), {"e": "old"})
    lua.client.xadd(p.events("w1"), {"e": "new"})
    lua.client.hset(lua.wf("w1"), "ckpt_ev", archived)
    ids = ["w1", "w2", "w3", "gone", "clean"]
    keys = [p.dirty, *[k for wid in ids for k in (lua.wf(wid), p.events(wid))]]
    reply = lua.run("checkpoint_read", keys, [60_000, ",SUCCEEDED,", 10, *ids])
    assert abs(int(reply[0]) - now) < 5_000
    fields, events = reply[1]
    assert dict(zip(fields[::2], fields[1::2], strict=True))[b"st"] == b"SUCCEEDED"
    assert [e[1] for e in events] == [[b"e", b"new"]]
    assert reply[2] == 0  # RUNNING, marked recently: not due yet
    assert reply[3][0][:2] == [b"st", b"RUNNING"]  # marked long ago: due whatever its status
    assert reply[4:] == [-1, 0]


def test_checkpoint_ack_answers_each_documented_code_and_records_the_batch(lua: Lua) -> None:
    p = lua.part
    for wid, ver in (("saved", 3), ("moved", 4), ("q", 2), ("qmoved", 5), ("ahead", 1)):
        lua.client.hset(lua.wf(wid), mapping={"ver": ver})
        lua.client.zadd(p.dirty, {wid: 1})
    lua.client.hset(p.quarantine, "saved", "{}")
    rows = [("saved", 3, "", "0", ""), ("moved", 3, "", "0", ""), ("gone", 1, "", "0", ""),
            ("q", 2, "", "0", '{"reason":"x"}'), ("qmoved", 4, "", "0", '{"reason":"y"}'), ("ahead", 2, "", "0", "")]
    first = lua.client.xadd(p.events("saved"), {"e": "1"})
    archived = lua.client.xadd(p.events("saved"), {"e": "2"})
    newer = lua.client.xadd(p.events("saved"), {"e": "3"})
    rows[0] = ("saved", 3, archived.decode(), "0", "")
    keys = [p.dirty, p.checkpoint_info, p.quarantine, *[lua.wf(r[0]) for r in rows],
            *[p.events(r[0]) for r in rows]]
    args = [1000, "owner-1", *[v for r in rows for v in r]]
    assert lua.run("checkpoint_ack", keys, args) == [1, 0, -1, 2, 3, -2]
    # What PostgreSQL holds leaves the stream; what came after the archived entry stays.
    assert [i for i, _ in lua.client.xrange(p.events("saved"))] == [newer] and first != archived
    assert lua.client.hget(lua.wf("saved"), "ckpt") == b"3" and lua.client.hget(lua.wf("moved"), "ckpt") == b"3"
    assert lua.client.hget(lua.wf("q"), "ckpt") is None
    assert sorted(lua.client.zrange(p.dirty, 0, -1)) == [b"ahead", b"moved", b"qmoved"]
    assert lua.client.zscore(p.dirty, "moved") == 1000  # raised to the read time
    assert sorted(lua.client.hkeys(p.quarantine)) == [b"q", b"qmoved"]
    info = lua.client.hgetall(p.checkpoint_info)
    assert (info[b"by"], info[b"workflows"]) == (b"owner-1", b"2")


def test_checkpoint_lease_is_held_by_one_owner_at_a_time(lua: Lua) -> None:
    key = [lua.part.checkpoint_lease]
    assert lua.run("checkpoint_lease", key, ["acquire", "a", 60_000]) == 1
    assert lua.run("checkpoint_lease", key, ["acquire", "b", 60_000]) == 0
    assert lua.run("checkpoint_lease", key, ["acquire", "a", 90_000]) == 1
    assert lua.client.pttl(lua.part.checkpoint_lease) > 60_000
    assert lua.run("checkpoint_lease", key, ["release", "b", 0]) == 0
    assert lua.run("checkpoint_lease", key, ["release", "a", 0]) == 1
    assert lua.run("checkpoint_lease", key, ["acquire", "b", 60_000]) == 1


def test_checkpoint_census_counts_live_members_and_drops_stale_ones(lua: Lua) -> None:
    key = [f"{lua.part.namespace}:{{meta}}:checkpointers"]
    lua.client.hset(key[0], "stale", 1)
    assert lua.run("checkpoint_census", key, ["join", "a", 60_000]) == 1
    assert lua.run("checkpoint_census", key, ["join", "b", 60_000]) == 2
    assert lua.run("checkpoint_census", key, ["leave", "a", 60_000]) == 1
    assert lua.client.hkeys(key[0]) == [b"b"]


def test_checkpoint_life_only_ever_raises_the_stored_epoch(lua: Lua) -> None:
    key = [lua.part.life]
    assert lua.run("checkpoint_life", key, [""]) == 0
    assert lua.run("checkpoint_life", key, [5]) == 5
    assert lua.run("checkpoint_life", key, [3]) == 5
    assert lua.client.hget(lua.part.life, "epoch") == b"5"


def test_dirty_trim_drops_the_oldest_marks_beyond_the_bound_and_raises_the_marker(lua: Lua) -> None:
    p = lua.part
    lua.client.zadd(p.dirty, {f"w{i}": i for i in range(5)})
    keys = [p.dirty, p.dirty_trimmed]
    assert lua.run("dirty_trim", keys, [0, 2, 2]) == [2, 1]
    assert lua.run("dirty_trim", keys, [0, 2, 2]) == [1, 0]
    assert lua.run("dirty_trim", keys, [0, 2, 2]) == [0, 0]
    assert lua.client.zrange(p.dirty, 0, -1) == [b"w3", b"w4"]
    assert lua.client.get(p.dirty_trimmed) == b"2"


def test_dirty_remark_marks_unsaved_workflows_and_clears_the_marker_on_the_last_page(lua: Lua) -> None:
    p = lua.part
    states = {"unsaved": {"ver": 3, "ckpt": 2}, "saved": {"ver": 3, "ckpt": 3}, "events": {"ver": 3, "ckpt": 3},
              "quarantined": {"ver": 3, "ckpt": 1}}
    for wid, fields in states.items():
        lua.client.hset(lua.wf(wid), mapping=fields)
    lua.client.xadd(p.events("events"), {"e": "1"})
    lua.client.hset(p.quarantine, "quarantined", "{}")
    lua.client.set(p.dirty_trimmed, 7)
    ids = [*states, "gone"]
    keys = [p.dirty, p.dirty_trimmed, p.quarantine, *[k for w in ids for k in (lua.wf(w), p.events(w))]]
    assert lua.run("dirty_remark", keys, ["7", "0", *ids]) == [2, 0]
    assert sorted(lua.client.zrange(p.dirty, 0, -1)) == [b"events", b"unsaved"]
    assert lua.run("dirty_remark", keys, ["6", "1", *ids]) == [0, 0]  # trimmed again meanwhile
    assert lua.run("dirty_remark", keys, ["7", "1", *ids]) == [0, 1]
    assert lua.client.exists(p.dirty_trimmed) == 0


# -- recovery scripts ------------------------------------------------------------------------


def test_reconcile_workflow_marks_an_existing_workflow_dirty_and_reports_it(lua: Lua) -> None:
    p = lua.part
    keys = [lua.wf(), p.dirty, p.events("w1")]
    assert lua.run("reconcile_workflow", keys, ["w1", '{"event_type":"workflow.reconciled"}']) == 0
    assert lua.client.exists(p.dirty, p.events("w1")) == 0
    lua.client.hset(lua.wf(), "ver", 1)
    lua.client.zadd(p.dirty, {"w1": 5})
    assert lua.run("reconcile_workflow", keys, ["w1", '{"event_type":"workflow.reconciled"}']) == 1
    assert lua.client.zscore(p.dirty, "w1") == 5  # an older mark keeps its age
    assert lua.client.xlen(p.events("w1")) == 1


def test_recover_workflow_enqueues_once_per_stalled_version(lua: Lua) -> None:
    p = lua.part
    keys = [lua.wf(), p.ready, p.delayed, p.delayed_payloads, p.recovered("w1")]
    assert lua.run("recover_workflow", keys, [3, 60_000, "r1", b"P"]) == [-1]
    lua.client.hset(lua.wf(), "ver", 3)
    assert lua.run("recover_workflow", keys, [2, 60_000, "r1", b"P"]) == [0]
    assert lua.run("recover_workflow", keys, [3, 60_000, "r1", b"P"]) == [1]
    assert lua.run("recover_workflow", keys, [3, 60_000, "r2", b"P"]) == [-2]
    assert lua.ready() == ["r1"]
    assert lua.client.get(p.recovered("w1")) == b"3"


def test_restore_workflow_loads_a_newer_snapshot_once_and_never_an_older_one(lua: Lua) -> None:
    p = lua.part
    keys = [lua.wf(), p.events("w1"), p.ready, p.delayed, p.delayed_payloads, p.workflows, p.dirty,
            p.recovered("w1")]

    def restore(version: int, msg_id: str) -> Any:
        return lua.run("restore_workflow", keys, ["w1", version, 42, 60_000, 1, "meta", f"M{version}", msg_id, b"P"])

    lua.client.hset(lua.wf(), mapping={"ver": 2, "stale": 1})
    lua.client.xadd(p.events("w1"), {"e": "old"})
    assert restore(5, "r1") == [1, 2]
    assert lua.client.hgetall(lua.wf()) == {b"meta": b"M5", b"ver": b"5", b"ckpt": b"5"}
    assert lua.client.xlen(p.events("w1")) == 0
    assert lua.client.zscore(p.workflows, "w1") == 42 and lua.client.zscore(p.dirty, "w1") is not None
    assert lua.client.get(p.recovered("w1")) == b"5"
    assert restore(5, "r2") == [0, 5]
    assert restore(4, "r3") == [0, 5]
    assert lua.ready() == ["r1"]
    lua.client.delete(lua.wf())
    assert restore(1, "r4") == [1, -1]


# -- consumers -------------------------------------------------------------------------------


def test_delete_consumers_deletes_only_idle_consumers_without_pending_entries(lua: Lua) -> None:
    p = lua.part
    assert lua.run("delete_consumers", [p.ready], [CONSUMER_GROUP, 0, ""]) == 0  # no stream
    lua.delivered()  # consumer c1 holds one pending entry
    lua.client.xgroup_createconsumer(p.ready, CONSUMER_GROUP, "idle")
    assert lua.run("delete_consumers", [p.ready], [CONSUMER_GROUP, 0, "c1"]) == 0
    assert lua.run("delete_consumers", [p.ready], [CONSUMER_GROUP, 600_000, ""]) == 0  # not idle long enough
    assert lua.run("delete_consumers", [p.ready], [CONSUMER_GROUP, 0, ""]) == 1
    assert [c["name"] for c in lua.client.xinfo_consumers(p.ready, CONSUMER_GROUP)] == [b"c1"]
